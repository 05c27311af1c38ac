// XLA FFI handlers that run a 2-D convolution (NHWC activations, HWIO kernel, any group
// count) with oneDNN on the CPU: forward, input gradient and kernel gradient.
//
// XLA:CPU emits grouped convolutions as slow loops; oneDNN has JIT-compiled direct kernels
// for them (the ones PyTorch's CPU convolutions use). fastscale_jax/ops/onednn.py compiles
// this file on first use and calls it through jax.ffi; conv.py's 'onednn' formulation.
//
// Padding is symmetric-left, (k - 1) / 2, with the right padding that makes the output
// (H - 1) / stride + 1 (PyTorch/pycls convention); all buffers are float32, row-major.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

// One convolution problem: batch, input size, channels, kernel, stride, groups.
struct Problem {
  int64_t n, h, w, cin, cout, k, stride, groups;

  int64_t ho() const { return (h - 1) / stride + 1; }
  int64_t wo() const { return (w - 1) / stride + 1; }
  int64_t pad_l() const { return (k - 1) / 2; }
  int64_t pad_r(int64_t in, int64_t out) const { return (out - 1) * stride + k - in - pad_l(); }
  std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t> key() const {
    return {n, h, w, cin, cout, k, stride, groups};
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc ActivationMd(int64_t n, int64_t c, int64_t h, int64_t w, bool any) {
  return memory::desc({n, c, h, w}, dt::f32, any ? tag::any : tag::nhwc);
}

// The HWIO kernel (I = Cin / groups, O = Cout) as oneDNN's (G, O/G, I, KH, KW) weights.
memory::desc KernelMd(const Problem& p, bool any) {
  const int64_t ig = p.cin / p.groups, og = p.cout / p.groups;
  const int64_t skw = ig * p.cout, skh = p.k * skw;
  const bool dense = p.groups == 1;  // oneDNN's ungrouped weights have no G dimension
  const memory::dims dims = dense ? memory::dims{p.cout, ig, p.k, p.k}
                                  : memory::dims{p.groups, og, ig, p.k, p.k};
  if (any) return memory::desc(dims, dt::f32, tag::any);
  return memory::desc(dims, dt::f32, dense ? memory::dims{1, p.cout, skh, skw}
                                           : memory::dims{og, 1, p.cout, skh, skw});
}

// Activation layout: our NHWC buffers used directly, or the layout oneDNN prefers (blocked
// channels, e.g. nChw8c) with reorders in and out. Which is faster depends on the shape. The
// two layouts sum in different orders, so their results differ in the last bits: a choice
// made by timing would make a run's numerics depend on timing noise. The layout is therefore
// a setting of the run (FastscaleOnednnConfigure, called by onednn.py from the config):
// nhwc (the default) or blocked for every problem, or tune: time both the first time a
// problem is seen and record the choice in the run's record file (in its workdir), which a
// resumed run reads back, so the same problem always runs the same kernel within a run.
enum class Layout { kNhwc = 0, kBlocked = 1, kTune = 2 };

struct Settings {
  Layout layout = Layout::kNhwc;
  std::string record;  // tune: the file of recorded choices ('' = none: tune every process)
};

std::mutex& SettingsMutex() {
  static std::mutex mu;
  return mu;
}

Settings& CurrentSettings() {
  static Settings settings;
  return settings;
}

enum class Op { kForward, kInputGrad, kKernelGrad };
enum Arg { kX = 0, kKernel = 1, kY = 2 };

// Per op: oneDNN's argument for each of our buffers (x, kernel, y or their gradients), and
// the one buffer the op writes.
struct OpArgs {
  int dnnl_arg[3];
  Arg output;
};
constexpr OpArgs kOpArgs[3] = {
    {{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST}, kY},
    {{DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST}, kX},
    {{DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}, kKernel},
};

// A primitive, and per argument (x, kernel, y: our buffers) the layout the primitive wants
// and the reorder between ours and it (ours -> its for inputs, its -> ours for the output).
struct Entry {
  const OpArgs* args;
  dnnl::primitive conv;
  memory::desc ours[3], theirs[3];
  bool reorder_needed[3];
  dnnl::reorder reorder[3];
  memory::desc reorder_scratchpad[3];
  memory::desc scratchpad;
};

std::shared_ptr<Entry> Build(Op op, const Problem& p, bool any) {
  auto e = std::make_shared<Entry>();
  e->args = &kOpArgs[static_cast<int>(op)];
  const int64_t ho = p.ho(), wo = p.wo();
  const memory::dims strides = {p.stride, p.stride}, pad_l = {p.pad_l(), p.pad_l()},
                     pad_r = {p.pad_r(p.h, ho), p.pad_r(p.w, wo)};
  const auto x_md = ActivationMd(p.n, p.cin, p.h, p.w, any);
  const auto y_md = ActivationMd(p.n, p.cout, ho, wo, any);
  const auto k_md = KernelMd(p, true);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // concurrent calls must not share
  dnnl::convolution_forward::primitive_desc fwd(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x_md,
      k_md, y_md, strides, pad_l, pad_r, attr);
  dnnl::primitive_desc pd = fwd;
  if (op == Op::kForward) {
    e->conv = dnnl::convolution_forward(fwd);
  } else if (op == Op::kInputGrad) {
    dnnl::convolution_backward_data::primitive_desc bwd(
        Engine(), dnnl::algorithm::convolution_direct, x_md, k_md, y_md, strides, pad_l, pad_r,
        fwd, attr);
    e->conv = dnnl::convolution_backward_data(bwd);
    pd = bwd;
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        Engine(), dnnl::algorithm::convolution_direct, x_md, k_md, y_md, strides, pad_l, pad_r,
        fwd, attr);
    e->conv = dnnl::convolution_backward_weights(bwd);
    pd = bwd;
  }
  e->ours[kX] = ActivationMd(p.n, p.cin, p.h, p.w, false);
  e->ours[kY] = ActivationMd(p.n, p.cout, ho, wo, false);
  e->ours[kKernel] = KernelMd(p, false);
  for (int a = 0; a < 3; ++a) {
    e->theirs[a] = pd.query_md(dnnl::query::exec_arg_md, e->args->dnnl_arg[a]);
  }
  e->scratchpad = pd.scratchpad_desc();
  for (int a = 0; a < 3; ++a) {
    e->reorder_needed[a] = e->theirs[a] != e->ours[a];
    if (!e->reorder_needed[a]) continue;
    const bool output = a == e->args->output;
    const auto& from = output ? e->theirs[a] : e->ours[a];
    const auto& to = output ? e->ours[a] : e->theirs[a];
    dnnl::reorder::primitive_desc pd(Engine(), from, Engine(), to, attr);
    e->reorder[a] = dnnl::reorder(pd);
    e->reorder_scratchpad[a] = pd.scratchpad_desc();
  }
  return e;
}

// Temporary buffers (reordered operands, oneDNN scratchpad) are reused per thread: fresh
// large allocations are new pages from the kernel on every call, page-faulted and zeroed.
void* Workspace(int slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[7];
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    std::free(b.data);
    b.size = (bytes + 4095) / 4096 * 4096;
    b.data = std::aligned_alloc(4096, b.size);
    if (b.data == nullptr) throw std::bad_alloc();
  }
  return b.data;
}

void Reorder(const Entry& e, int a, const dnnl::stream& stream, const memory& from,
             const memory& to) {
  const auto& pad = e.reorder_scratchpad[a];
  std::unordered_map<int, memory> args = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  if (pad.get_size() > 0) {
    args[DNNL_ARG_SCRATCHPAD] = memory(pad, Engine(), Workspace(4 + a, pad.get_size()));
  }
  e.reorder[a].execute(stream, args);
}

// Runs one entry on our buffers x, kernel, y (or their gradients; which are written
// depends on the op).
void Execute(const Entry& e, float* x, float* kernel, float* y) {
  dnnl::stream stream(Engine());
  float* buffers[3] = {x, kernel, y};
  memory ours[3], theirs[3];
  std::unordered_map<int, memory> args;
  for (int a = 0; a < 3; ++a) {
    ours[a] = memory(e.ours[a], Engine(), buffers[a]);
    theirs[a] = e.reorder_needed[a]
                    ? memory(e.theirs[a], Engine(), Workspace(a, e.theirs[a].get_size()))
                    : ours[a];
    if (e.reorder_needed[a] && a != e.args->output) Reorder(e, a, stream, ours[a], theirs[a]);
    args[e.args->dnnl_arg[a]] = theirs[a];
  }
  args[DNNL_ARG_SCRATCHPAD] =
      memory(e.scratchpad, Engine(), Workspace(3, std::max<size_t>(e.scratchpad.get_size(), 1)));
  e.conv.execute(stream, args);
  const int out = e.args->output;
  if (e.reorder_needed[out]) Reorder(e, out, stream, theirs[out], ours[out]);
  stream.wait();
}

double Seconds(const Entry& e, float* x, float* kernel, float* y) {
  auto start = std::chrono::steady_clock::now();
  Execute(e, x, kernel, y);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The layout choices recorded so far: an exclusive lock on the record file (flock: other
// processes tuning the same problem wait, then read this one's choice), released on scope exit.
class ChoiceFile {
 public:
  explicit ChoiceFile(const std::string& path) {
    if (path.empty()) return;
    path_ = path;
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND, 0644);
    if (fd_ >= 0 && flock(fd_, LOCK_EX) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~ChoiceFile() {
    if (fd_ >= 0) {
      flock(fd_, LOCK_UN);
      close(fd_);
    }
  }
  // 1: blocked, 0: nhwc, -1: not recorded (or no file).
  int Find(const std::string& key) const {
    if (fd_ < 0) return -1;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      const auto space = line.rfind(' ');
      if (space == key.size() && line.compare(0, space, key) == 0)
        return line.substr(space + 1) == "blocked" ? 1 : 0;
    }
    return -1;
  }
  void Record(const std::string& key, bool blocked) const {
    if (fd_ < 0) return;
    const std::string line = key + (blocked ? " blocked\n" : " nhwc\n");
    if (write(fd_, line.data(), line.size()) < 0) return;  // unrecorded: tuned again next time
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::string ChoiceKey(Op op, const Problem& p) {
  std::ostringstream s;
  s << static_cast<int>(op) << ' ' << p.n << ' ' << p.h << ' ' << p.w << ' ' << p.cin << ' '
    << p.cout << ' ' << p.k << ' ' << p.stride << ' ' << p.groups;
  return s.str();
}

// With Layout::kTune: time both layouts on the call's own buffers (a warm-up and the best of
// two runs each) and keep the faster, unless a choice for the problem is recorded; record it.
// Every variant writes the full result.
std::shared_ptr<Entry> Tune(Op op, const Problem& p, float* x, float* kernel, float* y,
                            const std::string& record) {
  const ChoiceFile choices(record);
  const std::string key = ChoiceKey(op, p);
  const int known = choices.Find(key);
  if (known >= 0) return Build(op, p, known == 1);
  auto nhwc = Build(op, p, false), blocked = Build(op, p, true);
  bool same = true;
  for (int a = 0; a < 3; ++a) same = same && nhwc->theirs[a] == blocked->theirs[a];
  bool use_blocked = false;
  if (!same) {
    Execute(*nhwc, x, kernel, y);
    Execute(*blocked, x, kernel, y);
    double t_nhwc = 1e30, t_blocked = 1e30;
    for (int i = 0; i < 2; ++i) {
      t_nhwc = std::min(t_nhwc, Seconds(*nhwc, x, kernel, y));
      t_blocked = std::min(t_blocked, Seconds(*blocked, x, kernel, y));
    }
    use_blocked = t_blocked < t_nhwc;
  }
  choices.Record(key, use_blocked);
  return use_blocked ? blocked : nhwc;
}

// Built entries by (op, problem); cleared when the settings change.
using EntryCache = std::map<std::pair<int, decltype(Problem{}.key())>, std::shared_ptr<Entry>>;

EntryCache& Entries() {
  static EntryCache cache;
  return cache;
}

// The entry for (op, problem), built on first use (building JIT-compiles oneDNN kernels).
std::shared_ptr<Entry> Lookup(Op op, const Problem& p, float* x, float* kernel, float* y) {
  std::lock_guard<std::mutex> lock(SettingsMutex());
  auto& slot = Entries()[{static_cast<int>(op), p.key()}];
  if (slot) return slot;
  const Settings& s = CurrentSettings();
  slot = s.layout == Layout::kTune ? Tune(op, p, x, kernel, y, s.record)
                                   : Build(op, p, s.layout == Layout::kBlocked);
  return slot;
}

ffi::Error Run(Op op, const Problem& p, float* x, float* kernel, float* y) {
  try {
    Execute(*Lookup(op, p, x, kernel, y), x, kernel, y);
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN convolution: ") + err.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      "oneDNN convolution: out of memory for its workspace");
  }
  return ffi::Error::Success();
}

Problem MakeProblem(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel,
                    int64_t stride, int64_t groups) {
  return Problem{x[0], x[1], x[2], x[3], kernel[3], kernel[0], stride, groups};
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t groups) {
  Problem p = MakeProblem(x.dimensions(), kernel.dimensions(), stride, groups);
  return Run(Op::kForward, p, x.typed_data(), kernel.typed_data(), y->typed_data());
}

ffi::Error InputGrad(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                     ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t groups) {
  Problem p = MakeProblem(dx->dimensions(), kernel.dimensions(), stride, groups);
  return Run(Op::kInputGrad, p, dx->typed_data(), kernel.typed_data(), dy.typed_data());
}

ffi::Error KernelGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dkernel, int64_t stride, int64_t groups) {
  Problem p = MakeProblem(x.dimensions(), dkernel->dimensions(), stride, groups);
  return Run(Op::kKernelGrad, p, x.typed_data(), dkernel->typed_data(), dy.typed_data());
}

}  // namespace

// All three take two float32 buffers and return one, with int64 attributes stride, groups.
static auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("stride")
      .Attr<int64_t>("groups");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FastscaleOnednnConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FastscaleOnednnConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FastscaleOnednnConvKernelGrad, KernelGrad, Binding());

// The run's layout setting (0 nhwc, 1 blocked, 2 tune) and, for tune, the file its choices are
// recorded in ('' for none). Drops every built entry, so later calls follow the new setting.
// Returns 0, or -1 for an unknown layout.
extern "C" int FastscaleOnednnConfigure(int layout, const char* record) {
  if (layout < 0 || layout > 2) return -1;
  std::lock_guard<std::mutex> lock(SettingsMutex());
  CurrentSettings().layout = static_cast<Layout>(layout);
  CurrentSettings().record = record == nullptr ? "" : record;
  Entries().clear();
  return 0;
}
