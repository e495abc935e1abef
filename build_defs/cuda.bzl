"""cuda_library: compiles .cu files with nvcc and wraps the objects in a cc_library.

Bazel 4.2.3 has no CUDA rules offline, so each .cu file becomes one genrule that runs nvcc from
/usr/local/cuda, and the objects are linked like any other cc_library. Code is built for sm_80 and
sm_90a, plus compute_90 PTX so newer GPUs can JIT it.

In a CPU-only build (--define=cuda=off, //build_defs:no_cuda) the genrules write empty placeholder
files and the library is empty, so `bazel build //...` never runs nvcc or links CUDA libraries.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = " ".join([
    "-O3",
    "-std=c++17",
    "-Xcompiler -fPIC",
    "-Xcompiler -fvisibility=hidden",
    "-Xcompiler -Wall",
    "--expt-relaxed-constexpr",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_90,code=compute_90",
])

def cuda_library(name, srcs, hdrs = [], cu_hdrs = [], deps = [], visibility = None, **kwargs):
    """A cc_library built from CUDA sources.

    Args:
      name: target name.
      srcs: the .cu files.
      hdrs: public headers of this library (also visible to nvcc).
      cu_hdrs: other headers the .cu files include (labels from any package).
      deps: cc_library dependencies for linking (cudart is always added).
      visibility: as for cc_library.
      **kwargs: passed to the cc_library.
    """
    objs = []
    for src in srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", "") + ".cu.o"
        native.genrule(
            name = obj.replace(".", "_"),
            srcs = [src] + hdrs + cu_hdrs,
            outs = [obj],
            cmd = select({
                "//build_defs:no_cuda": "touch $@",
                "//conditions:default": "%s %s -I. -I$(GENDIR) -c $(location %s) -o $@" % (NVCC, NVCC_FLAGS, src),
            }),
            message = "nvcc " + src,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = select({"//build_defs:no_cuda": [], "//conditions:default": objs}),
        hdrs = hdrs,
        deps = select({"//build_defs:no_cuda": [], "//conditions:default": deps + ["@cuda//:cudart"]}),
        visibility = visibility,
        **kwargs
    )
