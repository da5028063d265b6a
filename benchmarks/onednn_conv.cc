// oneDNN convolutions (NHWC activations, HWIO kernels) as XLA FFI targets:
// the forward, the input gradient and the kernel gradient of a 2-D
// convolution with one stride for both axes and any padding (the right and
// bottom padding follow from the output's shape). Built and used by
// benchmarks/onednn_conv.py (an experiment, not part of affect_jax), against
// oneDNN 3.x (the PyPI wheels) or 2.x (Debian's libdnnl-dev), which differ
// only in how a primitive descriptor is made.
// Primitives are created once per shape and kept; the kernel is reordered
// into oneDNN's preferred layout on every call (it changes every step).
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <memory>
#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {
dnnl::engine& Engine() { static dnnl::engine e(dnnl::engine::kind::cpu, 0); return e; }

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, s, pt, pl;
  memory::dims pad_r() const {
    return {(oh - 1) * s + kh - h - pt, (ow - 1) * s + kw - w - pl};
  }
  memory::desc src() const {
    return memory::desc({n, c, h, w}, memory::data_type::f32, memory::dims{h * w * c, 1, w * c, c});
  }
  memory::desc dst() const {
    return memory::desc({n, o, oh, ow}, memory::data_type::f32, memory::dims{oh * ow * o, 1, ow * o, o});
  }
  memory::desc hwio() const {  // logical OIHW over HWIO memory
    return memory::desc({o, c, kh, kw}, memory::data_type::f32, memory::dims{1, o, kw * c * o, c * o});
  }
  memory::desc any_w() const {
    return memory::desc({o, c, kh, kw}, memory::data_type::f32, memory::format_tag::any);
  }
  auto key() const { return std::make_tuple(n, h, w, c, kh, kw, o, oh, ow, s, pt, pl); }
};

// A primitive descriptor from the operation's arguments: oneDNN 3.x takes
// the engine first (and a backward primitive's forward hint last); 2.x
// takes an operation descriptor, then the engine and the hint.
template <typename P, typename... A>
typename P::primitive_desc Pd(const dnnl::engine& e, A&&... a) {
#if DNNL_VERSION_MAJOR >= 3
  return typename P::primitive_desc(e, std::forward<A>(a)...);
#else
  return typename P::primitive_desc(typename P::desc(std::forward<A>(a)...), e);
#endif
}

template <typename P, typename... A>
typename P::primitive_desc BwdPd(const dnnl::engine& e, const dnnl::convolution_forward::primitive_desc& hint,
                                 A&&... a) {
#if DNNL_VERSION_MAJOR >= 3
  return typename P::primitive_desc(e, std::forward<A>(a)..., hint);
#else
  return typename P::primitive_desc(typename P::desc(std::forward<A>(a)...), e, hint);
#endif
}

struct Prims {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::reorder w_to_fwd;
  dnnl::convolution_backward_data::primitive_desc bwd_d_pd;
  dnnl::convolution_backward_data bwd_d;
  dnnl::reorder w_to_bwd_d;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_backward_weights bwd_w;
  dnnl::reorder dw_to_hwio;
};

Prims& Get(const Geometry& g) {
  static std::mutex mu;
  static std::map<decltype(g.key()), std::unique_ptr<Prims>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[g.key()];
  if (!slot) {
    auto& e = Engine();
    memory::dims strides{g.s, g.s}, dil{0, 0}, pl{g.pt, g.pl}, pr = g.pad_r();
    auto p = std::make_unique<Prims>();
    p->fwd_pd = Pd<dnnl::convolution_forward>(
        e, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        g.src(), g.any_w(), g.dst(), strides, dil, pl, pr);
    p->fwd = dnnl::convolution_forward(p->fwd_pd);
    p->w_to_fwd = dnnl::reorder(dnnl::reorder::primitive_desc(e, g.hwio(), e, p->fwd_pd.weights_desc()));
    p->bwd_d_pd = BwdPd<dnnl::convolution_backward_data>(
        e, p->fwd_pd, dnnl::algorithm::convolution_direct, g.src(), g.any_w(), g.dst(), strides, dil, pl, pr);
    p->bwd_d = dnnl::convolution_backward_data(p->bwd_d_pd);
    p->w_to_bwd_d = dnnl::reorder(dnnl::reorder::primitive_desc(e, g.hwio(), e, p->bwd_d_pd.weights_desc()));
    p->bwd_w_pd = BwdPd<dnnl::convolution_backward_weights>(
        e, p->fwd_pd, dnnl::algorithm::convolution_direct, g.src(), g.any_w(), g.dst(), strides, dil, pl, pr);
    p->bwd_w = dnnl::convolution_backward_weights(p->bwd_w_pd);
    p->dw_to_hwio = dnnl::reorder(dnnl::reorder::primitive_desc(e, p->bwd_w_pd.diff_weights_desc(), e, g.hwio()));
    slot = std::move(p);
  }
  return *slot;
}

Geometry Geo(ffi::Span<const int64_t> xs, ffi::Span<const int64_t> ws, ffi::Span<const int64_t> ys, int64_t s, int64_t pt, int64_t pl) {
  return Geometry{xs[0], xs[1], xs[2], xs[3], ws[0], ws[1], ws[3], ys[1], ys[2], s, pt, pl};
}

void Run(dnnl::primitive& p, std::unordered_map<int, memory> args) {
  dnnl::stream st(Engine());
  p.execute(st, args);
  st.wait();
}

// The HWIO kernel at `data` in the layout `want` of a primitive: as is, or
// reordered into a fresh buffer by `to_want`.
memory Kernel(const Geometry& g, float* data, const memory::desc& want, dnnl::reorder& to_want) {
  auto& e = Engine();
  memory hwio(g.hwio(), e, data);
  if (want == g.hwio()) return hwio;
  memory out(want, e);
  Run(to_want, {{DNNL_ARG_FROM, hwio}, {DNNL_ARG_TO, out}});
  return out;
}

ffi::Error Fwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
               int64_t stride, int64_t pad_top, int64_t pad_left) {
  Geometry g = Geo(x.dimensions(), w.dimensions(), y->dimensions(), stride, pad_top, pad_left);
  Prims& p = Get(g);
  auto& e = Engine();
  memory wr = Kernel(g, w.typed_data(), p.fwd_pd.weights_desc(), p.w_to_fwd);
  Run(p.fwd, {{DNNL_ARG_SRC, memory(g.src(), e, x.typed_data())}, {DNNL_ARG_WEIGHTS, wr},
              {DNNL_ARG_DST, memory(g.dst(), e, y->typed_data())}});
  return ffi::Error::Success();
}

ffi::Error BwdData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                   int64_t stride, int64_t pad_top, int64_t pad_left) {
  Geometry g = Geo(dx->dimensions(), w.dimensions(), dy.dimensions(), stride, pad_top, pad_left);
  Prims& p = Get(g);
  auto& e = Engine();
  memory wr = Kernel(g, w.typed_data(), p.bwd_d_pd.weights_desc(), p.w_to_bwd_d);
  Run(p.bwd_d, {{DNNL_ARG_DIFF_DST, memory(g.dst(), e, dy.typed_data())}, {DNNL_ARG_WEIGHTS, wr},
                {DNNL_ARG_DIFF_SRC, memory(g.src(), e, dx->typed_data())}});
  return ffi::Error::Success();
}

ffi::Error BwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                      int64_t stride, int64_t pad_top, int64_t pad_left) {
  Geometry g = Geo(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pad_top, pad_left);
  Prims& p = Get(g);
  auto& e = Engine();
  memory out(g.hwio(), e, dw->typed_data());
  memory dwr = out;
  bool reorder = p.bwd_w_pd.diff_weights_desc() != g.hwio();
  if (reorder) dwr = memory(p.bwd_w_pd.diff_weights_desc(), e);
  Run(p.bwd_w, {{DNNL_ARG_SRC, memory(g.src(), e, x.typed_data())}, {DNNL_ARG_DIFF_DST, memory(g.dst(), e, dy.typed_data())},
                {DNNL_ARG_DIFF_WEIGHTS, dwr}});
  if (reorder) Run(p.dw_to_hwio, {{DNNL_ARG_FROM, dwr}, {DNNL_ARG_TO, out}});
  return ffi::Error::Success();
}
}  // namespace

#define ATTRS .Attr<int64_t>("stride").Attr<int64_t>("pad_top").Attr<int64_t>("pad_left")
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, Fwd,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>() ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, BwdData,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>() ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, BwdWeights,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>() ATTRS);
