"""ctypes bindings of the normuon C API (normuon/normuon.h and comm.h).

This module is the only place that knows the C ABI. It mirrors every public struct field for
field (tests/python/capi_test.py checks sizes and offsets against the C compiler's), declares
argtypes/restype of every exported function, and turns a failed call into a Python exception
that carries the runtime's own message (normuon_last_error / normuon_comm_last_error).

Loading: the shared library is looked up, in order, at
  1. $NORMUON_LIBRARY (a path to libnormuon.so; when set it must load, there is no fallback),
  2. libnormuon.so next to this package (python/normuon/libnormuon.so, e.g. an installed copy),
  3. bazel-bin/libnormuon.so of the repository this package lives in
     (`bazel build //:libnormuon.so`).
The library is loaded once, on first use (`lib()`), not at import.

No torch here: this module works with the standard library alone.
"""

import ctypes
import enum
import os
import threading
from pathlib import Path

__all__ = [
    "Status", "Backend", "DType", "NsDType", "OwnerPolicy", "Schedule", "Variant", "GroupKind",
    "StateKind", "LrAdjust", "Orthogonalizer",
    "Fault", "Config", "GroupDesc", "ParamDesc", "StepInfo", "StepProfile", "P2P", "CommOps",
    "NorMuonError", "InvalidArgumentError", "InvalidHandleError", "InvalidStateError",
    "UnsupportedError", "OutOfMemoryError", "CudaError", "CommError", "NonFiniteError",
    "NorMuonTimeoutError", "InternalError", "lib", "library_path", "check", "check_comm",
    "API_VERSION", "GROUP_MATRIX_DEFAULT", "GROUP_ADAMW_DEFAULT", "has_symbol", "status_string",
    "version", "has_cuda", "error_for",
]

# --- constants and enums (values as in normuon.h / comm.h) ------------------------------------

API_VERSION = 1  # NORMUON_API_VERSION this binding was written against
VERSION_MAJOR = 0  # NORMUON_VERSION_MAJOR this binding was written against
GROUP_MATRIX_DEFAULT = 0
GROUP_ADAMW_DEFAULT = 1


class Status(enum.IntEnum):
    SUCCESS = 0
    ERROR_INVALID_ARGUMENT = 1
    ERROR_INVALID_HANDLE = 2
    ERROR_INVALID_STATE = 3
    ERROR_UNSUPPORTED = 4
    ERROR_OUT_OF_MEMORY = 5
    ERROR_CUDA = 6
    ERROR_COMM = 7
    ERROR_NONFINITE = 8
    ERROR_TIMEOUT = 9
    ERROR_INTERNAL = 10


class Backend(enum.IntEnum):
    CPU = 0
    CUDA = 1


class DType(enum.IntEnum):
    FP32 = 0
    BF16 = 1


class NsDType(enum.IntEnum):
    DEFAULT = 0
    FP32 = 1
    BF16 = 2
    FP16 = 3


class OwnerPolicy(enum.IntEnum):
    ROUND_ROBIN = 0
    COST_BALANCED = 1


class Schedule(enum.IntEnum):
    SEQUENTIAL = 0
    PER_MATRIX = 1
    BUCKETED = 2


class Variant(enum.IntEnum):
    NORMUON = 0
    NORMUON_PAPER = 1
    MUON = 2
    ADAMUON = 3


class LrAdjust(enum.IntEnum):
    DEFAULT = 0
    NONE = 1
    SPECTRAL = 2
    RMS = 3


class NeuronAxis(enum.IntEnum):
    ROWS = 0
    COLUMNS = 1


class NsMethod(enum.IntEnum):
    STANDARD = 0
    GRAM = 1


class Orthogonalizer(enum.IntEnum):
    QUINTIC = 0
    POLAR_EXPRESS = 1
    CUSTOM = 2


class GroupKind(enum.IntEnum):
    NORMUON = 0
    ADAMW = 1


class StateKind(enum.IntEnum):
    MOMENTUM = 0
    SECOND_MOMENT = 1
    EXP_AVG = 2
    EXP_AVG_SQ = 3
    STEP = 4


class Fault(enum.IntEnum):
    NONE = 0
    ERROR = 1
    NEVER_ARRIVE = 2
    WRONG_SIZE = 3


class CommMemory(enum.IntEnum):
    HOST = 0
    DEVICE = 1


# --- structs (field order, types and names exactly as in the C headers) -----------------------
# C enums are int-sized on every ABI this library supports; they are declared as c_int.

_enum = ctypes.c_int


class Config(ctypes.Structure):
    """normuon_config_t. Fill with `Config.defaults()` (normuon_config_init), then set fields."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("api_version", ctypes.c_uint32),
        ("backend", _enum),
        ("device", ctypes.c_int32),
        ("variant", _enum),
        ("ns_dtype", _enum),
        ("ns_steps", ctypes.c_int32),
        ("nesterov", ctypes.c_int32),
        ("ns_eps", ctypes.c_float),
        ("check_finite", ctypes.c_int32),
        ("lr", ctypes.c_float),
        ("momentum", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("adamw_lr", ctypes.c_float),
        ("adamw_beta1", ctypes.c_float),
        ("adamw_beta2", ctypes.c_float),
        ("adamw_eps", ctypes.c_float),
        ("adamw_weight_decay", ctypes.c_float),
        ("owner_policy", _enum),
        ("schedule", _enum),
        ("bucket_bytes", ctypes.c_uint64),
        ("lr_adjust", _enum),
        ("orthogonalizer", _enum),
        ("ns_coefficients", ctypes.POINTER(ctypes.c_float)),
        ("ns_norm_scale", ctypes.c_float),
        ("cautious_weight_decay", ctypes.c_int32),
        ("neuron_axis", _enum),
        ("cuda_graph", ctypes.c_int32),
        ("ns_method", _enum),
        ("ns_restart_count", ctypes.c_int32),
        ("ns_restarts", ctypes.POINTER(ctypes.c_int32)),
        ("ns_symmetric_products", ctypes.c_int32),
    ]

    @classmethod
    def defaults(cls):
        c = cls()
        lib().normuon_config_init(ctypes.byref(c))
        return c


class GroupDesc(ctypes.Structure):
    """normuon_group_desc_t. Fill with `GroupDesc.defaults(kind)` (normuon_group_desc_init)."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", _enum),
        ("lr", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
    ]

    @classmethod
    def defaults(cls, kind):
        d = cls()
        lib().normuon_group_desc_init(ctypes.byref(d), int(kind))
        return d


class ParamDesc(ctypes.Structure):
    """normuon_param_desc_t. Fill with `ParamDesc.defaults()` (normuon_param_desc_init).

    `name` is a char*: keep the bytes object alive until the register call returns (the runtime
    copies it)."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("row_begin", ctypes.c_int64),
        ("row_count", ctypes.c_int64),
        ("param", ctypes.c_void_p),
        ("param_dtype", _enum),
        ("grad", ctypes.c_void_p),
        ("grad_dtype", _enum),
        ("group", ctypes.c_int32),
        ("row_splits", ctypes.POINTER(ctypes.c_int64)),
        ("num_row_splits", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("col_begin", ctypes.c_int64),
        ("col_count", ctypes.c_int64),
        ("ld", ctypes.c_int64),
        ("pieces", ctypes.c_void_p),  # const normuon_piece_t* (Piece array)
        ("num_pieces", ctypes.c_int32),
    ]

    @classmethod
    def defaults(cls):
        d = cls()
        lib().normuon_param_desc_init(ctypes.byref(d))
        return d


class Piece(ctypes.Structure):
    """normuon_piece_t: one rectangle of a matrix on this rank (ParamDesc.pieces)."""
    _fields_ = [
        ("row_begin", ctypes.c_int64),
        ("row_count", ctypes.c_int64),
        ("col_begin", ctypes.c_int64),
        ("col_count", ctypes.c_int64),
        ("ld", ctypes.c_int64),
        ("param", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
    ]


class StepInfo(ctypes.Structure):
    """normuon_step_info_t."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("steps_taken", ctypes.c_int64),
        ("steps_skipped", ctypes.c_int64),
        ("last_skipped", ctypes.c_int32),
        ("nonfinite_param", ctypes.c_int32),
        ("ns_fallbacks", ctypes.c_int64),
        ("ns_fallback_param", ctypes.c_int32),
        ("ns_fallback_reason", ctypes.c_int32),
    ]

    @classmethod
    def defaults(cls):
        d = cls()
        lib().normuon_step_info_init(ctypes.byref(d))
        return d


class StepProfile(ctypes.Structure):
    """normuon_step_profile_t (milliseconds per phase of the last step)."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("total_ms", ctypes.c_double),
        ("finite_check_ms", ctypes.c_double),
        ("momentum_ms", ctypes.c_double),
        ("gather_ms", ctypes.c_double),
        ("newton_schulz_ms", ctypes.c_double),
        ("scatter_ms", ctypes.c_double),
        ("row_stats_ms", ctypes.c_double),
        ("update_ms", ctypes.c_double),
        ("adamw_ms", ctypes.c_double),
        ("exposed_comm_ms", ctypes.c_double),
        ("bytes_sent", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("buckets", ctypes.c_int32),
    ]

    @classmethod
    def defaults(cls):
        d = cls()
        lib().normuon_step_profile_init(ctypes.byref(d))
        return d


class P2P(ctypes.Structure):
    """normuon_p2p_t (comm.h): one point-to-point transfer of an exchange."""
    _fields_ = [
        ("peer", ctypes.c_int32),
        ("buf", ctypes.c_void_p),
        ("bytes", ctypes.c_uint64),
    ]


# Function-pointer types of normuon_comm_ops_t.
ExchangeFn = ctypes.CFUNCTYPE(_enum, ctypes.c_void_p, ctypes.POINTER(P2P), ctypes.c_int32,
                              ctypes.POINTER(P2P), ctypes.c_int32, ctypes.c_void_p)
AllReduceSumF32Fn = ctypes.CFUNCTYPE(_enum, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                     ctypes.POINTER(ctypes.c_float), ctypes.c_uint64,
                                     ctypes.c_void_p)
AllGatherFn = ctypes.CFUNCTYPE(_enum, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_uint64, ctypes.c_void_p)
AbortFn = ctypes.CFUNCTYPE(_enum, ctypes.c_void_p)
DestroyFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# last_error returns a const char* that ctx owns: c_void_p, so that a Python callback can hand
# out the address of a buffer it keeps (a c_char_p result would point into a temporary).
LastErrorFn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


class CommOps(ctypes.Structure):
    """normuon_comm_ops_t (comm.h): a caller-supplied communicator."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("ctx", ctypes.c_void_p),
        ("rank", ctypes.c_int32),
        ("world_size", ctypes.c_int32),
        ("exchange", ExchangeFn),
        ("all_reduce_sum_f32", AllReduceSumF32Fn),
        ("all_gather", AllGatherFn),
        ("abort", AbortFn),
        ("destroy", DestroyFn),
        ("last_error", LastErrorFn),
        ("device_memory", ctypes.c_int32),
    ]


# --- exceptions ----------------------------------------------------------------------------


class NorMuonError(RuntimeError):
    """A C API call failed. `status` is the Status, `message` the runtime's own text
    (normuon_last_error), `function` the C function that failed."""

    def __init__(self, status, message, function=""):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.message = message
        self.function = function
        name = self.status.name if isinstance(self.status, Status) else f"status {status}"
        where = f"{function}: " if function else ""
        text = f"{where}NORMUON_{name}"
        super().__init__(f"{text}: {message}" if message else text)


class InvalidArgumentError(NorMuonError, ValueError):
    pass


class InvalidHandleError(NorMuonError):
    pass


class InvalidStateError(NorMuonError):
    pass


class UnsupportedError(NorMuonError):
    pass


class OutOfMemoryError(NorMuonError, MemoryError):
    pass


class CudaError(NorMuonError):
    pass


class CommError(NorMuonError):
    pass


class NonFiniteError(NorMuonError):
    pass


class NorMuonTimeoutError(NorMuonError, TimeoutError):
    pass


class InternalError(NorMuonError):
    pass


_ERROR_CLASSES = {
    Status.ERROR_INVALID_ARGUMENT: InvalidArgumentError,
    Status.ERROR_INVALID_HANDLE: InvalidHandleError,
    Status.ERROR_INVALID_STATE: InvalidStateError,
    Status.ERROR_UNSUPPORTED: UnsupportedError,
    Status.ERROR_OUT_OF_MEMORY: OutOfMemoryError,
    Status.ERROR_CUDA: CudaError,
    Status.ERROR_COMM: CommError,
    Status.ERROR_NONFINITE: NonFiniteError,
    Status.ERROR_TIMEOUT: NorMuonTimeoutError,
    Status.ERROR_INTERNAL: InternalError,
}


def error_for(status, message, function=""):
    """The exception (not raised) for a failed status."""
    cls = _ERROR_CLASSES.get(status, NorMuonError)
    return cls(status, message, function)


def check(status, rt=0, function=""):
    """Raises the NorMuonError subclass for `status` unless it is SUCCESS; the message is
    normuon_last_error(rt) (rt = 0: the thread's message of a failed create/handle lookup)."""
    if status == Status.SUCCESS:
        return
    raw = lib().normuon_last_error(ctypes.c_uint64(rt))
    raise error_for(status, raw.decode("utf-8", "replace") if raw else "", function)


def check_comm(status, comm=0, function=""):
    """As check(), for comm.h calls: the message is normuon_comm_last_error(comm)."""
    if status == Status.SUCCESS:
        return
    raw = lib().normuon_comm_last_error(ctypes.c_uint64(comm))
    raise error_for(status, raw.decode("utf-8", "replace") if raw else "", function)


# --- loading -------------------------------------------------------------------------------

_u64 = ctypes.c_uint64
_i32 = ctypes.c_int32
_P = ctypes.POINTER

# name: (restype, argtypes). Every function of normuon.h and comm.h.
_SIGNATURES = {
    "normuon_status_string": (ctypes.c_char_p, [_enum]),
    "normuon_version": (ctypes.c_int, []),
    "normuon_has_cuda": (ctypes.c_int, []),
    "normuon_config_init": (None, [_P(Config)]),
    "normuon_group_desc_init": (None, [_P(GroupDesc), _enum]),
    "normuon_param_desc_init": (None, [_P(ParamDesc)]),
    "normuon_create": (_enum, [_P(Config), _u64, _P(_u64)]),
    "normuon_destroy": (_enum, [_u64]),
    "normuon_last_error": (ctypes.c_char_p, [_u64]),
    "normuon_add_group": (_enum, [_u64, _P(GroupDesc), _P(_i32)]),
    "normuon_set_group_lr": (_enum, [_u64, _i32, ctypes.c_float, ctypes.c_float]),
    "normuon_register_matrix": (_enum, [_u64, _P(ParamDesc), _P(_i32)]),
    "normuon_register_adamw": (_enum, [_u64, _P(ParamDesc), _P(_i32)]),
    "normuon_finalize": (_enum, [_u64]),
    "normuon_memory_required": (_enum, [_u64, _P(_u64)]),
    "normuon_bind": (_enum, [_u64, _i32, ctypes.c_void_p, ctypes.c_void_p]),
    "normuon_bind_piece": (_enum, [_u64, _i32, _i32, ctypes.c_void_p, ctypes.c_void_p]),
    "normuon_step": (_enum, [_u64, ctypes.c_float, ctypes.c_float, ctypes.c_void_p]),
    "normuon_grad_ready": (_enum, [_u64, _P(_i32), _i32, ctypes.c_void_p]),
    "normuon_step_cancel": (_enum, [_u64]),
    "normuon_step_info_init": (None, [_P(StepInfo)]),
    "normuon_step_result": (_enum, [_u64, _P(StepInfo)]),
    "normuon_step_profile_init": (None, [_P(StepProfile)]),
    "normuon_last_step_profile": (_enum, [_u64, _P(StepProfile)]),
    "normuon_last_step_trace": (_enum, [_u64, ctypes.c_void_p, _u64, _P(_u64)]),
    "normuon_state_size": (_enum, [_u64, _i32, _enum, _P(_u64)]),
    "normuon_param_state_size": (_enum, [_P(Config), _P(ParamDesc), _i32, _enum, _P(_u64)]),
    "normuon_get_state": (_enum, [_u64, _i32, _enum, ctypes.c_void_p, _u64]),
    "normuon_set_state": (_enum, [_u64, _i32, _enum, ctypes.c_void_p, _u64]),
    "normuon_save_checkpoint": (_enum, [_u64, ctypes.c_char_p]),
    "normuon_load_checkpoint": (_enum, [_u64, ctypes.c_char_p]),
    # comm.h
    "normuon_comm_ops_init": (None, [_P(CommOps)]),
    "normuon_comm_create_custom": (_enum, [_P(CommOps), _P(_u64)]),
    "normuon_comm_create_inprocess_group": (_enum, [_i32, ctypes.c_double, _P(_u64)]),
    "normuon_comm_create_inprocess_group_ex": (_enum, [_i32, ctypes.c_double, _enum, _P(_u64)]),
    "normuon_comm_destroy": (_enum, [_u64]),
    "normuon_comm_rank": (_enum, [_u64, _P(_i32)]),
    "normuon_comm_world_size": (_enum, [_u64, _P(_i32)]),
    "normuon_comm_abort": (_enum, [_u64]),
    "normuon_comm_get_async_error": (_enum, [_u64, _P(_enum)]),
    "normuon_comm_last_error": (ctypes.c_char_p, [_u64]),
    "normuon_comm_inject_fault": (_enum, [_u64, _enum, ctypes.c_int64]),
}

# Functions declared in the headers that a library may not export yet (bound when present;
# has_symbol tells): the NCCL communicator of comm.h, whose implementation lands separately.
NCCL_UNIQUE_ID_BYTES = 128  # NORMUON_NCCL_UNIQUE_ID_BYTES
_OPTIONAL_SIGNATURES = {
    "normuon_nccl_get_unique_id": (_enum, [ctypes.c_void_p]),
    "normuon_comm_create_nccl": (_enum, [ctypes.c_void_p, _i32, _i32, _i32, ctypes.c_double,
                                         _P(_u64)]),
    "normuon_comm_wrap_nccl": (_enum, [ctypes.c_void_p, ctypes.c_double, _P(_u64)]),
}

_lock = threading.Lock()
_lib = None
_lib_path = None


def _candidates():
    env = os.environ.get("NORMUON_LIBRARY")
    if env:
        return [Path(env)], True
    here = Path(__file__).resolve().parent
    return [here / "libnormuon.so", here.parent.parent / "bazel-bin" / "libnormuon.so"], False


def _declare(handle):
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, name)  # AttributeError names a missing symbol: a wrong library
        fn.restype = restype
        fn.argtypes = argtypes
    for name, (restype, argtypes) in _OPTIONAL_SIGNATURES.items():
        try:
            fn = getattr(handle, name)
        except AttributeError:
            continue
        fn.restype = restype
        fn.argtypes = argtypes


def lib():
    """The loaded library (ctypes.CDLL) with every function declared. Loads it on first call.

    Raises OSError naming every path tried when none loads, and when the library's major version
    differs from this binding's."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        paths, from_env = _candidates()
        errors = []
        for path in paths:
            if not from_env and not path.exists():
                errors.append(f"{path}: not found")
                continue
            try:
                handle = ctypes.CDLL(str(path))
            except OSError as e:
                errors.append(f"{path}: {e}")
                continue
            try:
                _declare(handle)
            except AttributeError as e:
                errors.append(f"{path}: not a normuon library, or older than this binding "
                              f"({e})")
                continue
            version = handle.normuon_version()
            if version // 10000 != VERSION_MAJOR:
                errors.append(f"{path}: library version {version} has major "
                              f"{version // 10000}, this binding expects {VERSION_MAJOR}")
                continue
            _lib, _lib_path = handle, str(path)
            return _lib
        how = ("$NORMUON_LIBRARY is set" if from_env else
               "set $NORMUON_LIBRARY, or build it with `bazel build //:libnormuon.so`")
        raise OSError("normuon: cannot load libnormuon.so (" + how + "); tried:\n  " +
                      "\n  ".join(errors))


def library_path():
    """The path the library was loaded from (loads it if needed)."""
    lib()
    return _lib_path


def has_symbol(name):
    """Whether the loaded library exports `name` (for functions newer libraries add)."""
    try:
        getattr(lib(), name)
        return True
    except AttributeError:
        return False


def status_string(status):
    """normuon_status_string: the constant's name, e.g. 'NORMUON_ERROR_INVALID_ARGUMENT'."""
    return lib().normuon_status_string(int(status)).decode()


def version():
    """(major, minor, patch) of the loaded library."""
    v = lib().normuon_version()
    return v // 10000, (v // 100) % 100, v % 100


def has_cuda():
    """Whether the loaded library was built with the CUDA backend."""
    return bool(lib().normuon_has_cuda())
