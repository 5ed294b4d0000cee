// A PrivateUse1 device guard that reports kpt_sim's real device count.
//
// torch's Python-registered guard (torch/csrc/acc/Module.cpp, PythonDeviceGuard) answers
// deviceCount() == 1, and the autograd engine sizes its per-device ready queues from that
// answer once per process (Engine::start_device_threads, on the first backward of any kind).
// This guard wraps the registered one, forwards every call to it, and only answers
// deviceCount() with a number set from Python. It also reads how many device queues the
// engine made, so that Python can refuse a graph the engine could not run. Plain C symbols,
// loaded with ctypes: no Python headers, no pybind11, no ninja.
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/engine.h>

#include <atomic>

void kpt_synchronize_device(c10::DeviceIndex device);  // privateuse1_runtime.cpp

namespace {

using c10::Device;
using c10::DeviceIndex;
using c10::Stream;
using c10::impl::DeviceGuardImplInterface;

class CountingGuard final : public DeviceGuardImplInterface {
 public:
  CountingGuard(const DeviceGuardImplInterface* inner, DeviceIndex count)
      : inner_(inner), count_(count) {}

  void set_count(DeviceIndex count) { count_.store(count); }

  // type() of the Python guard calls into Python; the slot is PrivateUse1 by construction.
  c10::DeviceType type() const override { return c10::DeviceType::PrivateUse1; }
  DeviceIndex deviceCount() const noexcept override { return count_.load(); }

  Device exchangeDevice(Device d) const override { return inner_->exchangeDevice(d); }
  Device getDevice() const override { return inner_->getDevice(); }
  void setDevice(Device d) const override { inner_->setDevice(d); }
  void uncheckedSetDevice(Device d) const noexcept override { inner_->uncheckedSetDevice(d); }
  // noexcept like the Python guard's: older headers declare these two noexcept, and a noexcept
  // override of a throwing virtual is valid too, so one source builds against torch 2.11-2.13.
  Stream getStream(Device d) const noexcept override { return inner_->getStream(d); }
  Stream getDefaultStream(Device d) const override { return inner_->getDefaultStream(d); }
  Stream getStreamFromGlobalPool(Device d, bool high) const override {
    return inner_->getStreamFromGlobalPool(d, high);
  }
  Stream getNewStream(Device d, int priority) const override {
    return inner_->getNewStream(d, priority);
  }
  Stream exchangeStream(Stream s) const noexcept override { return inner_->exchangeStream(s); }
  void destroyEvent(void* event, const DeviceIndex index) const noexcept override {
    inner_->destroyEvent(event, index);
  }
  void record(void** event, const Stream& stream, const DeviceIndex index,
              const c10::EventFlag flag) const override {
    inner_->record(event, stream, index, flag);
  }
  void block(void* event, const Stream& stream) const override { inner_->block(event, stream); }
  bool queryEvent(void* event) const override { return inner_->queryEvent(event); }
  bool queryStream(const Stream& stream) const override { return inner_->queryStream(stream); }
  void synchronizeStream(const Stream& stream) const override {
    inner_->synchronizeStream(stream);
  }
  void synchronizeEvent(void* event) const override { inner_->synchronizeEvent(event); }
  // torch.accelerator.synchronize(): the Python guard cannot; the runtime's callback can.
  void synchronizeDevice(const DeviceIndex index) const override { kpt_synchronize_device(index); }
  void recordDataPtrOnStream(const c10::DataPtr& ptr, const Stream& stream) const override {
    inner_->recordDataPtrOnStream(ptr, stream);
  }
  double elapsedTime(void* a, void* b, const DeviceIndex index) const override {
    return inner_->elapsedTime(a, b, index);
  }

 private:
  const DeviceGuardImplInterface* inner_;
  std::atomic<DeviceIndex> count_;
};

// Reads two protected members of the engine through a pointer to member named in a subclass
// (the one access C++ allows without touching torch).
struct EngineView : torch::autograd::Engine {
  static bool started(Engine& engine) {
    return (engine.*(&EngineView::thread_pool_shared_)) != nullptr;
  }
  static long queues(Engine& engine) {
    return static_cast<long>((engine.*(&EngineView::device_ready_queues_)).size());
  }
};

CountingGuard* installed = nullptr;  // leaked on purpose: the registry never owns its guards

}  // namespace

extern "C" {

// 0: installed or updated; 1: no PrivateUse1 guard registered yet; 2: count out of range.
int kpt_guard_install(int count) {
  if (count < 1 || count > 127) return 2;
  auto type = c10::DeviceType::PrivateUse1;
  auto& slot = c10::impl::device_guard_impl_registry[static_cast<size_t>(type)];
  const DeviceGuardImplInterface* current = slot.load();
  if (current == nullptr) return 1;
  if (current == installed) {
    installed->set_count(static_cast<DeviceIndex>(count));
    return 0;
  }
  installed = new CountingGuard(current, static_cast<DeviceIndex>(count));
  slot.store(installed);
  return 0;
}

int kpt_guard_count() {
  return installed == nullptr ? 0 : static_cast<int>(installed->deviceCount());
}

// -1 before the engine started its device threads; else how many device ready queues it made.
long kpt_engine_device_queues() {
  auto& engine = torch::autograd::Engine::get_default_engine();
  return EngineView::started(engine) ? EngineView::queues(engine) : -1;
}

}  // extern "C"
