// Flush-to-zero (FTZ) and denormals-are-zero (DAZ) for the calling thread. x86 and Arm cores compute with
// subnormal floats (below 1.2e-38) in slow microcode or traps unless these control bits are set, and the
// bits are per thread: a Node worker thread starts without them. A confident draft's softmax
// probabilities and their gradients underflow into that range late in training, which made the ONNX
// Runtime training step 2.5x slower on threads that do not flush.
#include <node_api.h>
#include <stdbool.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u
static bool set_flush(void) {
  _mm_setcsr(_mm_getcsr() | MXCSR_FTZ | MXCSR_DAZ);
  return true;
}
static bool get_flush(void) { return (_mm_getcsr() & (MXCSR_FTZ | MXCSR_DAZ)) == (MXCSR_FTZ | MXCSR_DAZ); }
#elif defined(__aarch64__)
// FPCR.FZ (bit 24) flushes both subnormal inputs and outputs of single and double precision.
#define FPCR_FZ (1ull << 24)
static bool set_flush(void) {
  unsigned long long fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  fpcr |= FPCR_FZ;
  __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
  return true;
}
static bool get_flush(void) {
  unsigned long long fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  return (fpcr & FPCR_FZ) != 0;
}
#else
static bool set_flush(void) { return false; }
static bool get_flush(void) { return false; }
#endif

static napi_value boolean(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

// flushDenormals(): sets the bits on this thread; true when the architecture has them.
static napi_value flush_denormals(napi_env env, napi_callback_info info) {
  (void)info;
  return boolean(env, set_flush());
}

// flushingDenormals(): whether this thread flushes now.
static napi_value flushing_denormals(napi_env env, napi_callback_info info) {
  (void)info;
  return boolean(env, get_flush());
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"flushDenormals", NULL, flush_denormals, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flushingDenormals", NULL, flushing_denormals, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
