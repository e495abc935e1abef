"""normuon_fuzzer: one libFuzzer target, its seed corpus and its corpus replay test.

For a fuzzer NAME (source NAME.cc defining LLVMFuzzerTestOneInput) this makes
  NAME_lib            the entry point as a library;
  NAME                the fuzzer binary: with --config=fuzz (clang, --define=fuzz=on) linked with
                      -fsanitize=fuzzer; otherwise linked with standalone_main.cc, a plain main
                      that runs the entry point on the files and directories it is given, so a
                      normal `bazel build //...` keeps every fuzzer compiling;
  NAME_replay_test    a GoogleTest that runs the entry point on every file of corpus/NAME and
                      regressions/NAME, so the seeds and every past finding replay in the
                      normal `bazel test //...` (and under --config=asan).
"""

def normuon_fuzzer(name, deps = []):
    native.cc_library(
        name = name + "_lib",
        testonly = True,
        srcs = [name + ".cc"],
        deps = deps + [":fuzz_input"],
        alwayslink = True,
    )
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = select({
            ":fuzzing": [],
            "//conditions:default": ["standalone_main.cc"],
        }),
        linkopts = select({
            ":fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = [":" + name + "_lib"],
    )
    native.cc_test(
        name = name + "_replay_test",
        size = "small",
        srcs = ["corpus_replay_test.cc"],
        args = [
            "fuzz/corpus/" + name,
            "fuzz/regressions/" + name,
        ],
        data = native.glob(["corpus/" + name + "/**", "regressions/" + name + "/**"]),
        deps = [
            ":" + name + "_lib",
            "@system//:gtest",
        ],
    )
