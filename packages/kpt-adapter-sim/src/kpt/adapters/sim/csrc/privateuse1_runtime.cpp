// What torch asks of a PrivateUse1 backend beyond a device guard, for kpt_sim.
//
// PyTorch's reference out-of-tree backend (OpenReg) registers three things in C++ that a
// Python backend cannot: PrivateUse1 hooks with a pinned-memory allocator (tensor.pin_memory(),
// DataLoader(pin_memory=True)), a c10::DeviceAllocator (torch.accelerator.memory.*), and a
// guard that can synchronize a device (torch.accelerator.synchronize()). kpt_sim's memory lives
// in the simulator daemon and its caching allocator is Python, so statistics, cache control
// and synchronization call back into Python through C function pointers set with ctypes.
// Plain C symbols: no Python headers, no pybind11.
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_set>

extern "C" {
// Each returns 0 on success; on failure it writes a message into `message` (capacity bytes).
typedef int (*kpt_sync_fn)(int device, char* message, int capacity);
// Fills out[0..7]: allocated current/peak, reserved current/peak, allocations, retries, ooms,
// requested current.
typedef int (*kpt_stats_fn)(int device, int64_t* out, char* message, int capacity);
// device -1: every device.
typedef int (*kpt_device_fn)(int device, char* message, int capacity);
}

namespace {

constexpr int kMessageBytes = 2048;
std::atomic<kpt_sync_fn> sync_callback{nullptr};
std::atomic<kpt_stats_fn> stats_callback{nullptr};
std::atomic<kpt_device_fn> empty_cache_callback{nullptr};
std::atomic<kpt_device_fn> reset_peak_callback{nullptr};

template <typename Call>
void call_python(const char* what, Call call) {
  char message[kMessageBytes] = {0};
  int code = call(message, kMessageBytes - 1);
  TORCH_CHECK(code == 0, "kpt_sim ", what, " failed: ", message);
}

// Host memory that counts as pinned. The simulator models host<->device copies itself, so
// "pinned" only has to be remembered: is_pinned() asks, DataLoader's pin thread allocates.
std::mutex pinned_mutex;
std::unordered_set<const void*>& pinned_pointers() {
  static auto* pointers = new std::unordered_set<const void*>();  // leaked: outlives statics
  return *pointers;
}

void free_pinned(void* pointer) {
  {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned_pointers().erase(pointer);
  }
  c10::free_cpu(pointer);
}

class PinnedHostAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    void* pointer = nbytes ? c10::alloc_cpu(nbytes) : nullptr;
    if (pointer != nullptr) {
      std::lock_guard<std::mutex> lock(pinned_mutex);
      pinned_pointers().insert(pointer);
    }
    return {pointer, pointer, &free_pinned, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_pinned; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

PinnedHostAllocator pinned_allocator;

class SimHooks final : public at::PrivateUse1HooksInterface {
 public:
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::Allocator* getPinnedMemoryAllocator() const override { return &pinned_allocator; }
  bool isPinnedPtr(const void* data) const override {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    return pinned_pointers().count(data) > 0;
  }
  void init() const override {}
};

SimHooks hooks;

// kpt_sim tensors are wrapper tensors without a torch storage: nothing should allocate device
// bytes through torch. Zero bytes are granted (torch makes empty storages); more is refused
// with the reason, where a missing allocator would crash the interpreter.
void no_delete(void*) {}

class SimDeviceAllocator final : public c10::DeviceAllocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    TORCH_CHECK(nbytes == 0, "kpt_sim tensors have no torch storage, so ", nbytes,
                " bytes cannot be allocated through torch on kpt_sim (an UntypedStorage or "
                "storage-based op on the device); make the tensor with a factory "
                "(torch.empty(..., device='kpt_sim')) or on the CPU and move it with .to()");
    return {nullptr, nullptr, &no_delete, c10::Device(c10::DeviceType::PrivateUse1, 0)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &no_delete; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t) override {
    auto callback = empty_cache_callback.load();
    if (callback != nullptr) {
      call_python("empty_cache", [&](char* m, int n) { return callback(-1, m, n); });
    }
  }
  void recordStream(const c10::DataPtr&, c10::Stream) override {}
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex device) override {
    c10::CachingDeviceAllocator::DeviceStats stats;
    auto callback = stats_callback.load();
    if (callback == nullptr) return stats;
    int64_t out[8] = {0};
    call_python("memory statistics", [&](char* m, int n) { return callback(device, out, m, n); });
    auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
    auto set = [&](c10::CachingDeviceAllocator::StatArray& array, int64_t current, int64_t peak) {
      array[all].current = current;
      array[all].peak = peak;
    };
    set(stats.allocated_bytes, out[0], out[1]);
    set(stats.active_bytes, out[0], out[1]);
    set(stats.reserved_bytes, out[2], out[3]);
    set(stats.requested_bytes, out[7], out[1]);
    stats.allocation[all].allocated = out[4];
    stats.num_alloc_retries = out[5];
    stats.num_ooms = out[6];
    return stats;
  }
  void resetAccumulatedStats(c10::DeviceIndex) override {}
  void resetPeakStats(c10::DeviceIndex device) override {
    auto callback = reset_peak_callback.load();
    if (callback != nullptr) {
      call_python("reset_peak_memory_stats", [&](char* m, int n) { return callback(device, m, n); });
    }
  }
};

SimDeviceAllocator device_allocator;

}  // namespace

// Used by the device guard (device_count_guard.cpp) for synchronizeDevice.
void kpt_synchronize_device(c10::DeviceIndex device) {
  auto callback = sync_callback.load();
  TORCH_CHECK(callback != nullptr, "kpt_sim: synchronize is not connected to the runtime yet");
  call_python("synchronize", [&](char* m, int n) { return callback(device, m, n); });
}

extern "C" {

void kpt_runtime_set_callbacks(kpt_sync_fn sync, kpt_stats_fn stats, kpt_device_fn empty_cache,
                               kpt_device_fn reset_peak) {
  sync_callback.store(sync);
  stats_callback.store(stats);
  empty_cache_callback.store(empty_cache);
  reset_peak_callback.store(reset_peak);
}

// Registers the hooks and the device allocator. torch takes one hooks registration per
// process, so this replaces the Python default: 0 done, 1 hooks already registered, 2 failed
// (the reason in `message`). Never throws through C.
int kpt_runtime_install(char* message, int capacity) {
  if (at::isPrivateUse1HooksRegistered()) return 1;
  try {
    at::RegisterPrivateUse1HooksInterface(&hooks);
    c10::SetAllocator(c10::DeviceType::PrivateUse1, &device_allocator, /*priority=*/1);
    return 0;
  } catch (const std::exception& error) {
    std::snprintf(message, capacity, "%s", error.what());
    return 2;
  }
}

}  // extern "C"
