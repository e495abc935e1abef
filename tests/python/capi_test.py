"""Tests of python/normuon/_capi.py: the ctypes mirrors against the C compiler's layout, the
function table against the headers, the loader, and C API error text reaching Python.

Needs no torch. Environment (set by run_python_test.sh from the Bazel target):
NORMUON_LIBRARY, NORMUON_STRUCT_LAYOUT (the struct_layout binary), NORMUON_HEADER,
NORMUON_COMM_HEADER.
"""

import ctypes
import ctypes.util
import os
import re
import subprocess
import sys
import unittest

from normuon import _capi


def c_layout():
    """Parses struct_layout's output: ({struct: size}, {struct: [(field, offset, size)]},
    {enum: value}, {typedef: size})."""
    out = subprocess.run([os.environ["NORMUON_STRUCT_LAYOUT"]], check=True,
                         capture_output=True, text=True).stdout
    structs, fields, enums, typedefs = {}, {}, {}, {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "struct":
            structs[rest[0]] = int(rest[1])
            fields[rest[0]] = []
        elif kind == "field":
            s, f = rest[0].split(".")
            fields[s].append((f, int(rest[1]), int(rest[2])))
        elif kind == "enum":
            enums[rest[0]] = int(rest[1])
        elif kind == "typedef":
            typedefs[rest[0]] = int(rest[1])
    return structs, fields, enums, typedefs


MIRRORS = {
    "normuon_config_t": _capi.Config,
    "normuon_group_desc_t": _capi.GroupDesc,
    "normuon_param_desc_t": _capi.ParamDesc,
    "normuon_piece_t": _capi.Piece,
    "normuon_step_info_t": _capi.StepInfo,
    "normuon_step_profile_t": _capi.StepProfile,
    "normuon_p2p_t": _capi.P2P,
    "normuon_comm_ops_t": _capi.CommOps,
}


class StructLayoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.structs, cls.fields, cls.enums, cls.typedefs = c_layout()

    def test_every_c_struct_has_a_mirror(self):
        self.assertEqual(set(self.structs), set(MIRRORS))

    def test_struct_sizes_equal_the_c_sizes(self):
        for name, mirror in MIRRORS.items():
            with self.subTest(struct=name):
                self.assertEqual(ctypes.sizeof(mirror), self.structs[name])

    def test_fields_have_the_c_names_order_offsets_and_sizes(self):
        for name, mirror in MIRRORS.items():
            with self.subTest(struct=name):
                ours = [(f, getattr(mirror, f).offset, getattr(mirror, f).size)
                        for f, _ in mirror._fields_]
                self.assertEqual(ours, self.fields[name])

    def test_handle_and_index_typedefs_match(self):
        self.assertEqual(self.typedefs["normuon_runtime_t"], ctypes.sizeof(ctypes.c_uint64))
        self.assertEqual(self.typedefs["normuon_comm_t"], ctypes.sizeof(ctypes.c_uint64))
        self.assertEqual(self.typedefs["normuon_param_t"], ctypes.sizeof(ctypes.c_int32))
        self.assertEqual(self.typedefs["normuon_group_t"], ctypes.sizeof(ctypes.c_int32))
        self.assertEqual(self.typedefs["normuon_status_t"], ctypes.sizeof(ctypes.c_int))

    def test_enum_values_match(self):
        e = self.enums
        self.assertEqual(e["NORMUON_API_VERSION"], _capi.API_VERSION)
        self.assertEqual(e["NORMUON_VERSION_MAJOR"], _capi.VERSION_MAJOR)
        self.assertEqual(e["NORMUON_GROUP_MATRIX_DEFAULT"], _capi.GROUP_MATRIX_DEFAULT)
        self.assertEqual(e["NORMUON_GROUP_ADAMW_DEFAULT"], _capi.GROUP_ADAMW_DEFAULT)
        prefixes = [(_capi.Status, "NORMUON_"), (_capi.Backend, "NORMUON_BACKEND_"),
                    (_capi.DType, "NORMUON_DTYPE_"), (_capi.NsDType, "NORMUON_NS_"),
                    (_capi.NsMethod, "NORMUON_NS_METHOD_"),
                    (_capi.OwnerPolicy, "NORMUON_OWNER_"),
                    (_capi.Schedule, "NORMUON_SCHEDULE_"), (_capi.LrAdjust, "NORMUON_LR_ADJUST_"),
                    (_capi.NeuronAxis, "NORMUON_NEURON_"),
                    (_capi.Orthogonalizer, "NORMUON_ORTHO_"), (_capi.Variant, "NORMUON_VARIANT_"),
                    (_capi.GroupKind, "NORMUON_GROUP_"), (_capi.StateKind, "NORMUON_STATE_"),
                    (_capi.Fault, "NORMUON_FAULT_"), (_capi.CommMemory, "NORMUON_COMM_MEMORY_")]
        for enum_cls, prefix in prefixes:
            for member in enum_cls:
                with self.subTest(member=f"{prefix}{member.name}"):
                    self.assertEqual(e[prefix + member.name], member.value)
        # Every C constant of a bound enum has a member (of the enum with the longest matching
        # prefix: NORMUON_NS_METHOD_* is ns_method's, not ns_dtype's).
        for cname in e:
            matching = [(enum_cls, prefix) for enum_cls, prefix in prefixes
                        if cname.startswith(prefix)]
            longest = max((len(p) for _, p in matching), default=0)
            for enum_cls, prefix in matching:
                if len(prefix) != longest:
                    continue
                if enum_cls is _capi.Status:
                    if cname.startswith(("NORMUON_ERROR_", "NORMUON_SUCCESS")):
                        self.assertIn(cname[len(prefix):], _capi.Status.__members__)
                elif cname.startswith(prefix) and not cname.endswith(("_MAX_ENUM", "_MIN_ENUM")) and cname not in (
                        "NORMUON_GROUP_MATRIX_DEFAULT", "NORMUON_GROUP_ADAMW_DEFAULT"):
                    self.assertIn(cname[len(prefix):], enum_cls.__members__, cname)

    def test_every_enum_constant_of_the_headers_is_compared(self):
        # struct_layout must print each constant the headers define (enumerators and the
        # NORMUON_*_DEFAULT / size macros), so a constant added later cannot go unchecked.
        defined = set()
        for env in ("NORMUON_HEADER", "NORMUON_COMM_HEADER"):
            with open(os.environ[env]) as f:
                text = f.read()
            defined |= set(re.findall(r"\b(NORMUON_[A-Z0-9_]+)\s*=\s*-?\d+", text))
            defined |= set(re.findall(r"#define\s+(NORMUON_[A-Z0-9_]+)\s+\d+", text))
        defined -= {"NORMUON_VERSION_MINOR", "NORMUON_VERSION_PATCH"}
        self.assertEqual(sorted(defined - set(self.enums)), [])
        self.assertEqual(self.enums["NORMUON_NCCL_UNIQUE_ID_BYTES"], _capi.NCCL_UNIQUE_ID_BYTES)

    def test_defaults_from_the_init_functions(self):
        c = _capi.Config.defaults()
        self.assertEqual(c.struct_size, ctypes.sizeof(_capi.Config))
        self.assertEqual(c.api_version, _capi.API_VERSION)
        self.assertAlmostEqual(c.lr, 0.02, places=7)
        self.assertEqual(c.ns_steps, 5)
        self.assertEqual(c.nesterov, 1)
        d = _capi.ParamDesc.defaults()
        self.assertEqual(d.struct_size, ctypes.sizeof(_capi.ParamDesc))
        self.assertEqual(d.group, -1)
        g = _capi.GroupDesc.defaults(_capi.GroupKind.ADAMW)
        self.assertAlmostEqual(g.lr, 3e-4, places=9)
        self.assertEqual(_capi.StepInfo.defaults().nonfinite_param, -1)
        ops = _capi.CommOps()
        _capi.lib().normuon_comm_ops_init(ctypes.byref(ops))
        self.assertEqual((ops.struct_size, ops.rank, ops.world_size),
                         (ctypes.sizeof(_capi.CommOps), 0, 1))


def header_functions(path):
    with open(path) as f:
        text = f.read()
    return set(re.findall(r"NORMUON_API\s+[^;(]*?\b(normuon_\w+)\s*\(", text))


class FunctionTableTest(unittest.TestCase):
    def test_every_header_function_is_declared(self):
        declared = set(_capi._SIGNATURES) | set(_capi._OPTIONAL_SIGNATURES)
        for env in ("NORMUON_HEADER", "NORMUON_COMM_HEADER"):
            funcs = header_functions(os.environ[env])
            self.assertTrue(funcs, env)
            missing = funcs - declared
            self.assertFalse(missing, f"functions of {env} without a ctypes signature: "
                                      f"{sorted(missing)}")

    def test_every_declared_function_is_in_a_header_and_exported(self):
        funcs = (header_functions(os.environ["NORMUON_HEADER"]) |
                 header_functions(os.environ["NORMUON_COMM_HEADER"]))
        for name in _capi._SIGNATURES:
            self.assertIn(name, funcs)
            self.assertTrue(_capi.has_symbol(name), name)
            fn = getattr(_capi.lib(), name)
            self.assertIsNotNone(fn.argtypes, name)

    def test_version_and_status_strings(self):
        major, minor, patch = _capi.version()
        self.assertEqual(major, _capi.VERSION_MAJOR)
        self.assertEqual(_capi.status_string(_capi.Status.ERROR_INVALID_ARGUMENT),
                         "NORMUON_ERROR_INVALID_ARGUMENT")
        for s in _capi.Status:
            self.assertEqual(_capi.status_string(s), "NORMUON_" + s.name)


class LoaderTest(unittest.TestCase):
    def run_python(self, code, **env):
        full = dict(os.environ, **env)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=full)

    def test_loads_the_library_named_by_the_environment(self):
        self.assertEqual(os.path.realpath(_capi.library_path()),
                         os.path.realpath(os.environ["NORMUON_LIBRARY"]))

    def test_a_missing_library_is_a_clear_error_naming_the_path(self):
        r = self.run_python("from normuon import _capi; _capi.lib()",
                            NORMUON_LIBRARY="/nonexistent/libnormuon.so")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("OSError", r.stderr)
        self.assertIn("/nonexistent/libnormuon.so", r.stderr)
        self.assertIn("NORMUON_LIBRARY", r.stderr)

    def test_a_library_without_the_api_is_refused(self):
        libc = ctypes.util.find_library("c")
        r = self.run_python("from normuon import _capi; _capi.lib()", NORMUON_LIBRARY=libc)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a normuon library", r.stderr)

    def test_importing_the_package_loads_neither_torch_nor_the_library(self):
        r = self.run_python("import sys, normuon; from normuon import _capi; "
                            "print('torch' in sys.modules, _capi._lib is None)")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["False", "True"])


class ErrorTextTest(unittest.TestCase):
    def setUp(self):
        self.lib = _capi.lib()
        cfg = _capi.Config.defaults()
        rt = ctypes.c_uint64()
        _capi.check(self.lib.normuon_create(ctypes.byref(cfg), 0, ctypes.byref(rt)))
        self.rt = rt.value

    def tearDown(self):
        if self.rt:
            self.lib.normuon_destroy(self.rt)

    def test_the_runtime_message_reaches_the_exception(self):
        with self.assertRaises(_capi.InvalidArgumentError) as cm:
            _capi.check(self.lib.normuon_set_group_lr(self.rt, 99, 0.1, 0.0), self.rt,
                        "normuon_set_group_lr")
        e = cm.exception
        self.assertIsInstance(e, _capi.NorMuonError)
        self.assertIsInstance(e, ValueError)
        self.assertEqual(e.status, _capi.Status.ERROR_INVALID_ARGUMENT)
        self.assertEqual(e.function, "normuon_set_group_lr")
        self.assertIn("group = 99 is not a group", e.message)
        self.assertIn("group = 99 is not a group", str(e))
        self.assertIn("NORMUON_ERROR_INVALID_ARGUMENT", str(e))

    def test_a_failed_create_reports_the_thread_message(self):
        cfg = _capi.Config.defaults()
        cfg.ns_steps = 0
        rt = ctypes.c_uint64()
        with self.assertRaises(_capi.InvalidArgumentError) as cm:
            _capi.check(self.lib.normuon_create(ctypes.byref(cfg), 0, ctypes.byref(rt)), 0,
                        "normuon_create")
        self.assertIn("config.ns_steps = 0", str(cm.exception))

    def test_a_destroyed_handle_is_an_invalid_handle_error(self):
        _capi.check(self.lib.normuon_destroy(self.rt))
        rt, self.rt = self.rt, 0
        with self.assertRaises(_capi.InvalidHandleError) as cm:
            _capi.check(self.lib.normuon_destroy(rt), 0, "normuon_destroy")
        self.assertIn("is not a live runtime", str(cm.exception))

    def test_state_errors_name_the_state(self):
        with self.assertRaises(_capi.InvalidStateError) as cm:
            _capi.check(self.lib.normuon_step(self.rt, -1.0, -1.0, None), self.rt)
        self.assertIn("step before finalize", str(cm.exception))

    def test_comm_errors_carry_the_comm_message(self):
        comm = ctypes.c_uint64()
        with self.assertRaises(_capi.NorMuonError) as cm:
            _capi.check_comm(self.lib.normuon_comm_create_inprocess_group(
                0, 1.0, ctypes.byref(comm)), 0, "normuon_comm_create_inprocess_group")
        self.assertIn("world_size", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
