// base/versioned_struct.h on a struct of the test's own with two versions: sizes below the first
// version, inside a field, older, current, newer (zero and non-zero extra bytes), garbage; input
// copies over defaults and output copies up to the caller's size; the compile-time table check.
#include "base/versioned_struct.h"

#include <cstddef>
#include <cstring>
#include <iterator>
#include <string>

#include "gtest/gtest.h"

namespace normuon {
namespace {

// Version 1 ended with p (16 bytes); b and c came in version 2.
struct Thing {
  uint32_t struct_size;
  int32_t a;
  const void* p;
  int64_t b;
  int32_t c;
};

constexpr StructField kThingFields[] = {
    NORMUON_STRUCT_FIELD(Thing, struct_size), NORMUON_STRUCT_FIELD(Thing, a),
    NORMUON_STRUCT_FIELD(Thing, p),           NORMUON_STRUCT_FIELD(Thing, b),
    NORMUON_STRUCT_FIELD(Thing, c),
};
constexpr StructLayout kThing = {"thing", "thing_t", "thing_init", sizeof(Thing), alignof(Thing),
                                 NORMUON_STRUCT_END_OF(Thing, p), kThingFields,
                                 std::size(kThingFields)};
static_assert(StructFieldCount<Thing>() == 5, "Thing has five fields");
static_assert(StructLayoutDescribes<Thing>(kThing), "the table describes Thing");
static_assert(sizeof(Thing) == 32 && NORMUON_STRUCT_END_OF(Thing, p) == 16, "LP64 layout");

// A table that forgot a field, one out of order, and a first version that is not a field's end.
constexpr StructField kMissingA[] = {NORMUON_STRUCT_FIELD(Thing, struct_size),
                                     NORMUON_STRUCT_FIELD(Thing, p), NORMUON_STRUCT_FIELD(Thing, b),
                                     NORMUON_STRUCT_FIELD(Thing, c)};
// Without a, p still starts where struct_size's end rounds up to: only the field count tells.
static_assert(StructLayoutIsExact({"t", "t", "t", sizeof(Thing), alignof(Thing), 16, kMissingA,
                                   std::size(kMissingA)}),
              "the tiling alone cannot see a field that hides in alignment padding");
static_assert(!StructLayoutDescribes<Thing>({"t", "t", "t", sizeof(Thing), alignof(Thing), 16,
                                             kMissingA, std::size(kMissingA)}),
              "a missing field is caught");
constexpr StructField kMissingC[] = {
    NORMUON_STRUCT_FIELD(Thing, struct_size), NORMUON_STRUCT_FIELD(Thing, a),
    NORMUON_STRUCT_FIELD(Thing, p), NORMUON_STRUCT_FIELD(Thing, b)};
static_assert(!StructLayoutDescribes<Thing>({"t", "t", "t", sizeof(Thing), alignof(Thing), 16,
                                             kMissingC, std::size(kMissingC)}),
              "a missing last field is caught");
static_assert(!StructLayoutDescribes<Thing>({"t", "t", "t", sizeof(Thing), alignof(Thing), 12,
                                             kThingFields, std::size(kThingFields)}),
              "a first version inside a field is caught");
constexpr StructField kSwapped[] = {
    NORMUON_STRUCT_FIELD(Thing, struct_size), NORMUON_STRUCT_FIELD(Thing, a),
    NORMUON_STRUCT_FIELD(Thing, b), NORMUON_STRUCT_FIELD(Thing, p), NORMUON_STRUCT_FIELD(Thing, c)};
static_assert(!StructLayoutDescribes<Thing>({"t", "t", "t", sizeof(Thing), alignof(Thing), 16,
                                             kSwapped, std::size(kSwapped)}),
              "fields out of order are caught");

Thing Defaults() {
  Thing t;
  std::memset(&t, 0, sizeof(t));
  t.struct_size = sizeof(t);
  t.a = 1;
  t.p = nullptr;
  t.b = 22;
  t.c = 333;
  return t;
}

Thing Callers(uint32_t size) {
  Thing t;
  std::memset(&t, 0, sizeof(t));
  t.struct_size = size;
  t.a = -1;
  t.p = &t;
  t.b = -2;
  t.c = -3;
  return t;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(VersionedStructTest, SizesBelowTheFirstVersionAreRefusedNamingTheArgument) {
  for (uint32_t size : {0u, 3u, 4u, 8u, 12u, 15u}) {
    const Thing in = Callers(size);
    absl::StatusOr<Thing> out = CopyStructIn(&in, kThing, Defaults());
    ASSERT_FALSE(out.ok()) << size;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Message(out.status()),
              "thing.struct_size " + std::to_string(size) +
                  " is smaller than the first version (16 bytes) of thing_t: fill the struct "
                  "with thing_init before setting its fields");
  }
}

TEST(VersionedStructTest, SizesInsideAFieldAreRefusedNamingTheField) {
  for (uint32_t size : {17u, 20u, 23u}) {
    const Thing in = Callers(size);
    absl::Status s = CopyStructIn(&in, kThing, Defaults()).status();
    EXPECT_NE(Message(s).find("thing.struct_size " + std::to_string(size) +
                              " ends inside field b (bytes 16 to 23) of thing_t (32 bytes)"),
              std::string::npos)
        << s;
  }
  const Thing in = Callers(26);
  EXPECT_NE(Message(CopyStructIn(&in, kThing, Defaults()).status()).find("inside field c"),
            std::string::npos);
}

TEST(VersionedStructTest, AnOlderSizeCopiesItsFieldsAndKeepsTheDefaultsOfTheRest) {
  const Thing v1 = Callers(16);
  absl::StatusOr<Thing> out = CopyStructIn(&v1, kThing, Defaults());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->struct_size, sizeof(Thing));  // complete from here on
  EXPECT_EQ(out->a, -1);
  EXPECT_EQ(out->p, &v1);
  EXPECT_EQ(out->b, 22);
  EXPECT_EQ(out->c, 333);

  const Thing through_b = Callers(24);  // a field boundary between two versions
  out = CopyStructIn(&through_b, kThing, Defaults());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->b, -2);
  EXPECT_EQ(out->c, 333);

  const Thing without_tail_padding = Callers(28);  // the end of c, before the tail padding
  out = CopyStructIn(&without_tail_padding, kThing, Defaults());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->c, -3);
}

TEST(VersionedStructTest, TheCurrentSizeCopiesEverything) {
  const Thing in = Callers(sizeof(Thing));
  absl::StatusOr<Thing> out = CopyStructIn(&in, kThing, Defaults());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::memcmp(&*out, &in, sizeof(Thing)), 0);
}

TEST(VersionedStructTest, ANewerSizeIsAcceptedOnlyWhenItsExtraBytesAreZero) {
  struct Newer {
    Thing thing;
    int64_t d;
  } newer;
  std::memset(&newer, 0, sizeof(newer));
  newer.thing = Callers(sizeof(Newer));
  absl::StatusOr<Thing> out = CopyStructIn(&newer.thing, kThing, Defaults());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->struct_size, sizeof(Thing));
  EXPECT_EQ(out->c, -3);

  newer.d = int64_t{1} << 16;  // byte 34 of the newer struct is 1
  out = CopyStructIn(&newer.thing, kThing, Defaults());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(out.status())
                .find("thing.struct_size 40 is larger than this library's thing_t (32 bytes) "
                      "and byte 34 is 1, not 0"),
            std::string::npos)
      << out.status();
}

TEST(VersionedStructTest, GarbageSizesAndNullAreRefusedWithoutReadingPastTheStruct) {
  Thing in = Callers(kMaxStructSize + 1);
  absl::Status s = CopyStructIn(&in, kThing, Defaults()).status();
  EXPECT_NE(Message(s).find("is larger than any version of thing_t (at most 4096 bytes; this "
                            "library's is 32)"),
            std::string::npos)
      << s;
  in.struct_size = 0xffffffffu;
  EXPECT_FALSE(CopyStructIn(&in, kThing, Defaults()).ok());
  s = CopyStructIn(static_cast<const Thing*>(nullptr), kThing, Defaults()).status();
  EXPECT_EQ(Message(s), "thing is NULL");
  EXPECT_EQ(Message(CheckStructOut(nullptr, kThing)), "thing is NULL");
}

TEST(VersionedStructTest, AFailedCopyLeavesTheOutputAlone) {
  const Thing in = Callers(20);
  Thing out = Defaults();
  EXPECT_FALSE(CopyStructIn(&in, kThing, &out).ok());
  const Thing defaults = Defaults();
  EXPECT_EQ(std::memcmp(&out, &defaults, sizeof(Thing)), 0);
}

TEST(VersionedStructTest, OutputsAreWrittenOnlyUpToTheCallersSize) {
  Thing full = Callers(sizeof(Thing));
  struct Buffer {
    Thing thing;
    unsigned char past[8];
  };
  // An older caller: struct_size and everything past its first version stay as they were.
  Buffer old;
  std::memset(&old, 0x77, sizeof(old));
  old.thing.struct_size = 16;
  ASSERT_TRUE(CheckStructOut(&old.thing, kThing).ok());
  CopyStructOut(&full, kThing, &old.thing);
  EXPECT_EQ(old.thing.struct_size, 16u);
  EXPECT_EQ(old.thing.a, -1);
  EXPECT_EQ(old.thing.p, full.p);
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&old);
  for (size_t i = 16; i < sizeof(old); ++i) EXPECT_EQ(bytes[i], 0x77) << i;

  // A newer caller: this library's fields written, the bytes past them left alone.
  Buffer newer;
  std::memset(&newer, 0x77, sizeof(newer));
  newer.thing.struct_size = sizeof(Buffer);
  ASSERT_TRUE(CheckStructOut(&newer.thing, kThing).ok());
  CopyStructOut(&full, kThing, &newer.thing);
  EXPECT_EQ(newer.thing.struct_size, sizeof(Buffer));
  EXPECT_EQ(newer.thing.c, -3);
  for (unsigned char b : newer.past) EXPECT_EQ(b, 0x77);

  // Sizes the input rules refuse are refused for outputs too.
  Thing bad = Callers(20);
  EXPECT_NE(Message(CheckStructOut(&bad, kThing)).find("ends inside field b"), std::string::npos);
  bad.struct_size = 8;
  EXPECT_NE(Message(CheckStructOut(&bad, kThing)).find("smaller than the first version"),
            std::string::npos);
}

}  // namespace
}  // namespace normuon
