#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers under fuzz/corpus/<fuzzer>/.

Seeds are small real inputs: a golden case of the official implementation and hand-made ones,
the model shape lists of tools/models, registrations encoded as finalize encodes them, and
structured inputs in the byte layouts documented at the top of each fuzzer's source (the
encoders below follow those layouts). Run from the repository root:

    python3 fuzz/make_corpus.py

It rewrites only the files named here; inputs that libFuzzer added to a corpus (named by their
SHA-1) are kept.
"""
import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(fuzzer, name, data):
    d = os.path.join(CORPUS, fuzzer)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- shared encoders (fuzz_input.h)

def u8(v):
    return struct.pack("<B", v & 0xFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def i32(v):
    return struct.pack("<i", v)


def i64(v):
    return struct.pack("<q", v)


def f32(v):
    return struct.pack("<f", v)


def shape_int(v):
    """FuzzInput::ShapeInt: a small value as selector 0 + (v + 2); anything else as selector 5
    + 8 bytes."""
    if -2 <= v <= 253:
        return u8(0) + u8(v + 2)
    return u8(5) + i64(v)


def name_bytes(s):
    b = s.encode()
    return u8(len(b)) + b


# ---------------------------------------------------------------- golden files

def golden_seeds():
    ref = os.path.join(ROOT, "tests", "data", "normuon_reference.txt")
    with open(ref) as f:
        lines = f.read().split("\n")
    # The AdamW case of the official implementation (1 x 64, three steps).
    start = lines.index("case adamw_1x64_4")
    end = lines.index("end", start)
    write("golden_fuzz", "adamw_1x64_official.txt", "\n".join(lines[start:end + 1]) + "\n")

    tiny = """# hand-made 2x3 normuon case: the parser checks form, not math
case tiny_normuon
kind normuon
lr 0.02
beta1 0.95
beta2 0.95
weight_decay 0.01
eps 1e-10
nesterov 1
ns_steps 5
steps 2
param_init 2 3 0.1 -0.2 0.3 -0.4 0.5 -0.6
grad_0 2 3 1 2 3 4 5 6
param_0 2 3 0.09 -0.21 0.29 -0.41 0.49 -0.61
grad_1 2 3 -1 -2 -3 -4 -5 -6
param_1 2 3 0.1 -0.2 0.3 -0.4 0.5 -0.6
momentum_final 2 3 0 0 0 0 0 0
second_moment_final 2 1 0.5 0.25
end
"""
    write("golden_fuzz", "tiny_normuon.txt", tiny)
    write("golden_fuzz", "two_cases_crlf.txt",
          tiny.replace("\n", "\r\n") +
          "case a1\r\nkind adamw\r\nlr 3e-4\r\nbeta1 0.9\r\nbeta2 0.95\r\nweight_decay 0\r\n"
          "eps 1e-8\r\nsteps 1\r\nparam_init 1 1 1\r\ngrad_0 1 1 0.5\r\nparam_0 1 1 0.99\r\n"
          "exp_avg_final 1 1 0.05\r\nexp_avg_sq_final 1 1 0.0125\r\nend\r\n")
    write("golden_fuzz", "truncated.txt", tiny[:tiny.index("grad_1")])
    write("golden_fuzz", "bad_count.txt", tiny.replace("grad_0 2 3 1 2 3 4 5 6", "grad_0 2 3 1 2"))
    write("golden_fuzz", "huge_shape.txt",
          tiny.replace("param_init 2 3", "param_init 9223372036854775807 3"))


# ---------------------------------------------------------------- model shape lists

def model_seeds():
    for model in ("tiny", "llama-1b-layer"):
        with open(os.path.join(ROOT, "tools", "models", model + ".txt")) as f:
            write("model_shapes_fuzz", model + ".txt", f.read())
    write("model_shapes_fuzz", "edge_cases.txt",
          "# comments, tabs, CRLF and a 1-D adamw\r\n"
          "w\t4096x4096 matrix # trailing comment\r\n"
          "b 4096 adamw\r\n"
          "e 1099511627776x1 adamw\n")
    write("model_shapes_fuzz", "too_large.txt", "w 1099511627777x2 matrix\n")
    write("model_shapes_fuzz", "duplicate.txt", "w 2x2 matrix\nw 2x2 adamw\n")


# ---------------------------------------------------------------- registrations

def fnv1a64(b):
    h = 0xCBF29CE484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def encode_registration(records):
    """sharding/registration.h, version 2: records are (kind, name, rows, cols, begin, count)
    and optionally col_begin, col_count (default 0, -1: every column)."""
    out = b"NMRG" + u32(2) + u32(112) + u32(0) + struct.pack("<Q", len(records))
    for record in records:
        kind, name, rows, cols, begin, count = record[:6]
        col_begin, col_count = record[6:8] if len(record) > 6 else (0, -1)
        nb = name.encode()
        out += u32(kind) + u32(len(nb)) + struct.pack("<Q", fnv1a64(nb))
        out += i64(rows) + i64(cols) + i64(begin) + i64(count) + i64(col_begin) + i64(col_count)
        out += nb[:48] + b"\0" * (48 - len(nb[:48]))
    return out


def registration_seeds():
    params = [(0, "h.0.attn.c_attn.weight", 192, 64), (1, "h.0.attn.c_attn.bias", 192, 1),
              (0, "h.0.mlp.c_proj.weight", 64, 256)]

    def fsdp(rows, world, rank):
        chunk = -(-rows // world)
        begin = min(rows, rank * chunk)
        return begin, min(chunk, rows - begin)

    ranks = [encode_registration([(k, n, r, c) + fsdp(r, 2, rank) for k, n, r, c in params])
             for rank in range(2)]
    raw = lambda a, b: u8(0) + u32(len(a)) + a + b
    write("registration_fuzz", "raw_two_ranks_agree.bin", raw(ranks[0], ranks[1]))
    other = encode_registration([(0, "h.0.attn.c_attn.weight", 192, 48) + fsdp(192, 2, 1)] +
                                [(k, n, r, c) + fsdp(r, 2, 1) for k, n, r, c in params[1:]])
    write("registration_fuzz", "raw_shape_mismatch.bin", raw(ranks[0], other))
    gap = encode_registration([(k, n, r, c, 0, r // 4) for k, n, r, c in params])
    write("registration_fuzz", "raw_gap.bin", raw(ranks[0], gap))
    long_name = "transformer.h.11.mlp.c_fc.weight.with.a.name.longer.than.the.prefix"
    whole = encode_registration([(0, long_name, 3072, 768, 0, 3072)])
    write("registration_fuzz", "raw_long_name_one_rank.bin", raw(whole, b""))
    write("registration_fuzz", "raw_truncated.bin", raw(ranks[0][:50], ranks[1]))
    # Two ranks splitting the columns of a matrix (tensor parallel, row-parallel layer), then the
    # same with an overlap of one column.
    tp = [encode_registration([(0, "w", 8, 6, 0, 8, 3 * r, 3)]) for r in range(2)]
    write("registration_fuzz", "raw_column_pieces.bin", raw(tp[0], tp[1]))
    bad = encode_registration([(0, "w", 8, 6, 0, 8, 2, 4)])
    write("registration_fuzz", "raw_column_overlap.bin", raw(tp[0], bad))

    # Structured mode: u8 mode(odd), u8 world, u8 count, per parameter kind/name/rows/cols, then
    # per rank and parameter begin/count (+ change byte for ranks > 0).
    def structured(world, params, shards, changes):
        out = u8(1) + u8(world - 1) + u8(len(params))
        for kind, name, rows, cols in params:
            out += u8(kind) + name_bytes(name) + shape_int(rows) + shape_int(cols)
        for rank in range(world):
            for k in range(len(params)):
                begin, count = shards[rank][k]
                out += shape_int(begin) + shape_int(count)
                if rank > 0:
                    out += u8(changes.get((rank, k), 0))
        return out

    p3 = [(0, "wq", 48, 32), (1, "bias", 40, 1), (0, long_name, 100, 7)]
    split3 = [[fsdp(r, 3, rank) for _, _, r, _ in p3] for rank in range(3)]
    write("registration_fuzz", "structured_three_ranks_fsdp.bin", structured(3, p3, split3, {}))
    write("registration_fuzz", "structured_rename.bin", structured(3, p3, split3, {(2, 0): 1}))
    write("registration_fuzz", "structured_overflow_rows.bin",
          structured(2, [(0, "big", 2**62, 3)], [[(0, 2**62)], [(2**62, 0)]], {}))


# ---------------------------------------------------------------- shard validation

def shard_input(rows, cols, shards, split_rows, split_world, a, b, plan, wire, policy):
    out = shape_int(rows) + shape_int(cols) + u8(len(shards) - 1)
    for begin, count in shards:
        out += shape_int(begin) + shape_int(count)
    out += shape_int(split_rows) + i32(split_world) + shape_int(a) + shape_int(b)
    out += u8(len(plan))
    for rows_k, cols_k, layout, owner in plan:
        out += u8(rows_k) + u8(cols_k) + u8(layout) + u8(owner)
    return out + u8(wire) + u8(policy)


def shard_seeds():
    write("shard_fuzz", "fsdp_cover.bin",
          shard_input(10, 4, [(0, 3), (3, 3), (6, 3), (9, 1)], 10, 4, 3, 5,
                      [(10, 4, 0, 0), (7, 3, 1, 1), (10, 4, 2, 3)], 2, 0))
    write("shard_fuzz", "overlap_and_gap.bin",
          shard_input(10, 4, [(0, 5), (4, 6)], 5, 4, -7, 9, [(5, 5, 0, 2)], 3, 1))
    write("shard_fuzz", "int64_edges.bin",
          shard_input(2**62, 2, [(0, 2**62), (2**62, 0)], 2**63 - 1, 3, 2**62, 4,
                      [(1, 1, 3, 0)], 1, 0))
    write("shard_fuzz", "past_the_end.bin",
          shard_input(8, 8, [(7, 2**63 - 1), (0, 7)], 0, -1, -2**63, -1, [(8, 8, 1, 1)], 0, 1))


# ---------------------------------------------------------------- tilings

def tiling_seeds():
    def free(rows, cols, pieces, mode=0):
        out = u8(mode) + shape_int(rows) + shape_int(cols) + u8(len(pieces))
        for rank, rb, rc, cb, cc in pieces:
            out += u8(rank) + shape_int(rb) + shape_int(rc) + shape_int(cb) + shape_int(cc)
        return out

    def mesh(rows, cols, tp, dp, split_cols, ragged, seed, edit=0, which=0, sign=0):
        return (u8(1) + struct.pack("<Q", rows - 1) + struct.pack("<Q", cols - 1) + u8(tp - 1) +
                u8(dp - 1) + u8(split_cols) + u8(ragged) + u8(seed) + u8(edit) + u8(which) +
                u8(sign))

    write("tiling_fuzz", "tp2_dp2_columns.bin",
          free(8, 6, [(0, 0, 4, 0, 3), (1, 4, 4, 0, 3), (2, 0, 4, 3, 3), (3, 4, 4, 3, 3)]))
    write("tiling_fuzz", "overlap.bin", free(8, 6, [(0, 0, 8, 0, 4), (1, 0, 8, 3, 3)]))
    write("tiling_fuzz", "gap_and_empty_rank.bin",
          free(8, 6, [(0, 0, 8, 0, 2), (1, 0, 0, 0, 0), (2, 0, 7, 2, 4)]))
    write("tiling_fuzz", "huge_values.bin",
          free(2**62, 2, [(0, 0, 2**62, 0, 2), (1, 2**62, 2**63 - 1, 0, 1), (2, -1, 1, 0, 1)]))
    write("tiling_fuzz", "mesh_tp4_dp2_rows.bin", mesh(24, 16, 4, 2, 0, 0, 0))
    write("tiling_fuzz", "mesh_tp2_dp4_cols_ragged.bin", mesh(10, 16, 2, 4, 1, 1, 9))
    write("tiling_fuzz", "mesh_edit_col_count.bin", mesh(12, 12, 2, 2, 1, 0, 0, 4, 1, 1))
    write("tiling_fuzz", "mesh_drop_piece.bin", mesh(12, 12, 4, 1, 0, 1, 3, 5, 2, 0))
    write("tiling_fuzz", "mesh_duplicate_piece.bin", mesh(12, 12, 2, 2, 0, 0, 0, 6, 3, 0))
    # Several pieces per rank with their indices (normuon_param_desc_t.pieces): a GQA QKV whose
    # TP ranks hold q, k and v rows; then two pieces of one rank overlapping each other.
    write("tiling_fuzz", "pieces_gqa_qkv.bin",
          free(16, 4, [(0, 0, 4, 0, 4), (0, 8, 2, 0, 4), (0, 12, 2, 0, 4),
                       (1, 4, 4, 0, 4), (1, 10, 2, 0, 4), (1, 14, 2, 0, 4)], mode=2))
    write("tiling_fuzz", "pieces_same_rank_overlap.bin",
          free(8, 6, [(0, 0, 8, 0, 3), (1, 0, 5, 3, 3), (1, 4, 4, 3, 3)], mode=2))


# ---------------------------------------------------------------- C API descriptors

def desc(adamw, name, rows, cols, begin=None, count=None, dtypes=(0, 0), group=0, pointers=0,
         struct_size_choice=1):
    out = u8(1 if adamw else 0) + u8(struct_size_choice)
    out += (u8(255) if name is None else name_bytes(name))
    out += shape_int(rows) + shape_int(cols)
    rng = (1 if begin is not None else 0) | (2 if count is not None else 0)
    out += u8(rng)
    if begin is not None:
        out += shape_int(begin)
    if count is not None:
        out += shape_int(count)
    out += u8(dtypes[0]) + u8(dtypes[1]) + u8(group) + u8(pointers)
    return out


def capi_seeds():
    def plain(*descs, flags=0, tail=b""):
        return u8(flags) + u8(len(descs) - 1) + b"".join(descs) + tail

    write("capi_fuzz", "matrix_and_bias.bin",
          plain(desc(False, "w", 16, 8), desc(True, "b", 16, 1, group=1)))
    write("capi_fuzz", "bf16_matrix.bin", plain(desc(False, "wb", 12, 20, dtypes=(1, 1))))
    # Config (flag bit 0): struct size kept, enums in range, ns_steps 5, nesterov 1,
    # check_finite 1, every float kept; then a NaN in the first gradient (flag bit 2).
    def config(check_finite=1, schedule=0, ortho=0, coefficient=None):
        out = (u8(1) + u8(0) + u8(0) + u8(0) + u8(0) + u8(0) + u8(0) + u8(4) + u8(0) + u8(1) +
               u8(0) + u8(check_finite) + u8(0) + u8(0) +
               b"".join(u8(1) + f32(0) for _ in range(11)))
        out += u8(0) + u8(schedule) + u8(0) + u8(0) + u8(0) + u8(0) + u8(ortho)
        out += u8(1) + f32(0) + u8(0) + u8(0) + u8(0) + u8(0)
        if coefficient is None:
            return out + u8(0) + f32(0)
        index, value = coefficient
        return out + u8(1 | (index << 2)) + f32(value)

    write("capi_fuzz", "nan_gradient_checked.bin",
          u8(4 | 1) + config() + u8(0) + desc(False, "w", 8, 8))
    # Bucketed schedule (worker threads) over three matrices, custom coefficients.
    write("capi_fuzz", "bucketed_custom_coefficients.bin",
          u8(1) + config(check_finite=0, schedule=2, ortho=2, coefficient=(4, -4.5)) + u8(2) +
          desc(False, "m0", 16, 8) + desc(False, "m1", 8, 16) + desc(False, "m2", 12, 12))
    write("capi_fuzz", "custom_coefficient_nan.bin",
          u8(1) + config(check_finite=0, ortho=2, coefficient=(7, float("nan"))) + u8(0) +
          desc(False, "w", 8, 8))
    write("capi_fuzz", "huge_shape_70000.bin", plain(desc(False, "big", 70000, 70000)))
    write("capi_fuzz", "overflowing_shape.bin",
          plain(desc(False, "o", 2**62, 4), desc(True, "p", 3037000500, 3037000500, group=1)))
    write("capi_fuzz", "bad_fields.bin",
          plain(desc(False, None, 4, 4), desc(False, "x", 4, 4, begin=3, count=2),
                desc(True, "y", 4, 4, group=0, pointers=2)))
    write("capi_fuzz", "shard_and_group.bin",
          # Flag bit 1: a NorMuon group with its defaults, then a shard of rows 8..16 in it.
          u8(2) + u8(0) + u8(1) + u8(0) + b"".join(u8(1) + f32(0) for _ in range(5)) +
          u8(0) + desc(False, "s", 32, 16, begin=8, count=8, group=2))
    write("capi_fuzz", "nonfinite_lr.bin",
          plain(desc(False, "w", 8, 8), flags=8, tail=f32(float("nan")) + f32(0.0)))


# ---------------------------------------------------------------- checkpoints

def ck_file(magic, sections):
    """runtime/checkpoint_format.h: header, then sections (tag, payload), with their CRC32s."""
    head = magic + u32(1) + u32(len(sections))
    out = head + u32(zlib.crc32(head))
    for tag, payload in sections:
        body = tag + u32(0) + struct.pack("<Q", len(payload)) + payload
        out += body + u32(zlib.crc32(body))
    return out


def ck_index(save_id, world, ranges, steps_taken=1, adamw_step=1, second_moment=1):
    """The index of the runtime checkpoint_fuzz loads into: default config, matrix "w" 8x4 in
    group 0 and AdamW "b" 8x1 in group 1. ranges[r] = [(begin, count) of w, of b].
    second_moment: the matrix_second_moment (1 v per row; 3 v per column of each row block)."""
    conf = struct.pack("<Q", save_id) + u32(world) + u32(0) + u32(0) + u32(5) + u32(1)
    conf += f32(1e-7) + u32(second_moment) + i64(steps_taken) + i64(0) + u32(2)
    conf += u32(0) + f32(0.95) + f32(0.95) + f32(1e-10)
    conf += u32(1) + f32(0.9) + f32(0.95) + f32(1e-10)
    parm = u32(2)
    params = (("w", 0, 0, 8, 4, 0), ("b", 1, 1, 8, 1, adamw_step))
    for name, kind, group, rows, cols, step in params:
        parm += u32(len(name)) + name.encode() + u32(kind) + u32(group) + i64(rows) + i64(cols)
        parm += i64(step)
    shrd = b"".join(i64(b) + i64(c) for rank in ranges for b, c in rank)
    return ck_file(b"NMCKINDX", [(b"CONF", conf), (b"PARM", parm), (b"SHRD", shrd)])


def ck_rank(save_id, rank, world, shards, adamw_step=1, column_blocks=0):
    """A rank file; shards = [(param, begin, count)] for the parameters with rows here.
    column_blocks > 0: matrix_second_moment 3, w's entry holding v for that many row blocks of 4
    columns (the same values on every rank); else 1 (v per row)."""
    sections = [(b"RANK", struct.pack("<Q", save_id) + u32(rank) + u32(world) + u32(2) +
                 u32(len(shards)) + u32(3 if column_blocks else 1))]
    for param, begin, count in shards:
        name, cols = ("w", 4) if param == 0 else ("b", 1)
        n = count * cols
        payload = u32(param) + u32(len(name)) + name.encode() + i64(begin) + i64(count)
        payload += i64(cols) + i64(adamw_step if param == 1 else 0)
        payload += b"".join(f32(0.01 * (k % 9) - 0.04) for k in range(n))
        second = n if param == 1 else 4 * column_blocks if column_blocks else count
        payload += b"".join(f32(0.001 * (k % 5 + 1)) for k in range(second))
        sections.append((b"MATX" if param == 0 else b"ADMW", payload))
    return ck_file(b"NMCKRANK", sections)


def checkpoint_seeds():
    sid = 0x1234567890ABCDEF
    one_index = ck_index(sid, 1, [[(0, 8), (0, 8)]])
    one_rank = ck_rank(sid, 0, 1, [(0, 0, 8), (1, 0, 8)])
    two_index = ck_index(sid, 2, [[(0, 4), (0, 4)], [(4, 4), (4, 4)]])
    two_r0 = ck_rank(sid, 0, 2, [(0, 0, 4), (1, 0, 4)])
    two_r1 = ck_rank(sid, 1, 2, [(0, 4, 4), (1, 4, 4)])
    uneven_index = ck_index(sid, 2, [[(0, 8), (0, 0)], [(8, 0), (0, 8)]])
    uneven_r0 = ck_rank(sid, 0, 2, [(0, 0, 8)])
    uneven_r1 = ck_rank(sid, 1, 2, [(1, 0, 8)])

    def load(index, r0, r1=b"", fix=0):
        return u8(2) + u8(fix) + u32(len(index)) + index + u32(len(r0)) + r0 + r1

    write("checkpoint_fuzz", "index_one_rank.bin", u8(0) + u8(0) + one_index)
    write("checkpoint_fuzz", "rank_file.bin", u8(1) + u8(0) + one_rank)
    write("checkpoint_fuzz", "load_one_rank.bin", load(one_index, one_rank))
    write("checkpoint_fuzz", "load_two_ranks.bin", load(two_index, two_r0, two_r1))
    write("checkpoint_fuzz", "load_uneven_split.bin", load(uneven_index, uneven_r0, uneven_r1))
    write("checkpoint_fuzz", "load_other_save_id.bin",
          load(two_index, two_r0, ck_rank(sid + 1, 1, 2, [(0, 4, 4), (1, 4, 4)])))
    write("checkpoint_fuzz", "load_step_mismatch.bin",
          load(two_index, two_r0, ck_rank(sid, 1, 2, [(0, 4, 4), (1, 4, 4)], adamw_step=2)))
    bad_crc = bytearray(one_rank)
    bad_crc[-1] ^= 0xFF
    write("checkpoint_fuzz", "load_bad_crc_fixed.bin", load(one_index, bytes(bad_crc), fix=1))
    write("checkpoint_fuzz", "load_truncated.bin", load(one_index, one_rank[:-30]))

    # Neuron axis = columns (flags bit 1; bit 2: the runtime's w in two row blocks).
    cols_index = ck_index(sid, 1, [[(0, 8), (0, 8)]], second_moment=3)
    cols_rank = ck_rank(sid, 0, 1, [(0, 0, 8), (1, 0, 8)], column_blocks=1)
    cols_two_blocks = ck_rank(sid, 0, 1, [(0, 0, 8), (1, 0, 8)], column_blocks=2)
    # Saved at world 2 with all of w on rank 0: rank 1 kept the same v but saved no entry.
    cols_uneven_index = ck_index(sid, 2, [[(0, 8), (0, 0)], [(8, 0), (0, 8)]], second_moment=3)
    cols_uneven_r0 = ck_rank(sid, 0, 2, [(0, 0, 8)], column_blocks=1)
    cols_uneven_r1 = ck_rank(sid, 1, 2, [(1, 0, 8)], column_blocks=1)

    def load_cols(index, r0, r1=b"", flags=2):
        return u8(2) + u8(flags) + u32(len(index)) + index + u32(len(r0)) + r0 + r1

    write("checkpoint_fuzz", "rank_file_columns.bin", u8(1) + u8(0) + cols_two_blocks)
    write("checkpoint_fuzz", "load_columns_one_rank.bin", load_cols(cols_index, cols_rank))
    write("checkpoint_fuzz", "load_columns_two_blocks.bin",
          load_cols(cols_index, cols_two_blocks, flags=6))
    write("checkpoint_fuzz", "load_columns_uneven_split.bin",
          load_cols(cols_uneven_index, cols_uneven_r0, cols_uneven_r1))
    write("checkpoint_fuzz", "load_columns_other_row_split.bin",
          load_cols(cols_index, cols_rank, flags=6))
    write("checkpoint_fuzz", "load_columns_into_rows_axis.bin",
          load_cols(cols_index, cols_rank, flags=0))
    write("checkpoint_fuzz", "load_rows_into_columns_axis.bin", load_cols(one_index, one_rank))


def main():
    golden_seeds()
    model_seeds()
    registration_seeds()
    shard_seeds()
    tiling_seeds()
    capi_seeds()
    checkpoint_seeds()
    for fuzzer in sorted(os.listdir(CORPUS)):
        print(fuzzer, len(os.listdir(os.path.join(CORPUS, fuzzer))), "seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
