// A thin Node-API binding of MPI for specforge's data-parallel ranks: init, rank, size, local rank,
// in-place sum all-reduce (float32, float64), broadcast, barrier, abort, finalize. MPI does the work; the
// only logic here is turning typed arrays into (pointer, count, datatype) and MPI errors into exceptions.
#include <dlfcn.h>
#include <mpi.h>
#include <napi.h>

#include <climits>
#include <ctime>
#include <string>

namespace {

int worldRank = -1;
int worldSize = 0;
int nodeRank = -1;

void Check(Napi::Env env, int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Napi::Error::New(env, std::string(what) + ": " + std::string(text, len));
}

void RequireInit(Napi::Env env) {
  if (worldRank < 0) throw Napi::Error::New(env, "MPI is not initialized: call init() first");
}

// init(): MPI_Init_thread with MPI_THREAD_FUNNELED (only the main thread calls MPI; Node's other threads
// never do). Errors come back as return codes (thrown here), not as MPI's default abort.
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready) {
    // Open MPI's components are plugins that resolve libmpi's symbols globally; this addon was loaded with
    // RTLD_LOCAL, so make the libmpi it links global first (as Python's mpi4py does).
    Dl_info lib;
    if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &lib) && lib.dli_fname) dlopen(lib.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int provided = 0;
    Check(env, MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  Check(env, MPI_Comm_rank(MPI_COMM_WORLD, &worldRank), "MPI_Comm_rank");
  Check(env, MPI_Comm_size(MPI_COMM_WORLD, &worldSize), "MPI_Comm_size");
  // The rank among the processes of this machine: which GPU this process takes.
  MPI_Comm node;
  Check(env, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, worldRank, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  Check(env, MPI_Comm_rank(node, &nodeRank), "MPI_Comm_rank");
  MPI_Comm_free(&node);
  return env.Undefined();
}

Napi::Value Rank(const Napi::CallbackInfo& info) {
  RequireInit(info.Env());
  return Napi::Number::New(info.Env(), worldRank);
}

Napi::Value Size(const Napi::CallbackInfo& info) {
  RequireInit(info.Env());
  return Napi::Number::New(info.Env(), worldSize);
}

Napi::Value LocalRank(const Napi::CallbackInfo& info) {
  RequireInit(info.Env());
  return Napi::Number::New(info.Env(), nodeRank);
}

// allReduceSum(Float32Array | Float64Array): every element becomes its sum over ranks, in place. Longer
// arrays than MPI's int count go in pieces.
Napi::Value AllReduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireInit(env);
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "allReduceSum: expected a Float32Array or Float64Array");
  Napi::TypedArray array = info[0].As<Napi::TypedArray>();
  MPI_Datatype type;
  size_t width;
  if (array.TypedArrayType() == napi_float32_array) {
    type = MPI_FLOAT;
    width = 4;
  } else if (array.TypedArrayType() == napi_float64_array) {
    type = MPI_DOUBLE;
    width = 8;
  } else {
    throw Napi::TypeError::New(env, "allReduceSum: expected a Float32Array or Float64Array");
  }
  char* data = static_cast<char*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  for (size_t done = 0, n = array.ElementLength(); done < n;) {
    int count = static_cast<int>(std::min<size_t>(n - done, INT_MAX));
    Check(env, MPI_Allreduce(MPI_IN_PLACE, data + done * width, count, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    done += count;
  }
  return env.Undefined();
}

// broadcast(view, root): the bytes of a typed array (or Buffer, DataView) on `root` replace every other
// rank's, in place.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireInit(env);
  if (info.Length() < 2 || !(info[0].IsTypedArray() || info[0].IsDataView()) || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "broadcast: expected (typed array, root rank)");
  char* data;
  size_t bytes;
  if (info[0].IsTypedArray()) {
    Napi::TypedArray a = info[0].As<Napi::TypedArray>();
    data = static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    bytes = a.ByteLength();
  } else {
    Napi::DataView v = info[0].As<Napi::DataView>();
    data = static_cast<char*>(v.ArrayBuffer().Data()) + v.ByteOffset();
    bytes = v.ByteLength();
  }
  int root = info[1].As<Napi::Number>().Int32Value();
  if (root < 0 || root >= worldSize) throw Napi::RangeError::New(env, "broadcast: root " + std::to_string(root) + " is not a rank of 0.." + std::to_string(worldSize - 1));
  for (size_t done = 0; done < bytes;) {
    int count = static_cast<int>(std::min<size_t>(bytes - done, INT_MAX));
    Check(env, MPI_Bcast(data + done, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    done += count;
  }
  return env.Undefined();
}

// barrier(): blocks until every rank has arrived. A rank can wait here a long while (rank 0 evaluating or
// writing a checkpoint), so it sleeps between polls instead of spinning a core as MPI_Barrier does.
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireInit(env);
  MPI_Request request;
  Check(env, MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier");
  timespec pause{0, 0};
  for (int polls = 0;; polls++) {
    int done = 0;
    Check(env, MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) break;
    // The first thousand polls spin (a barrier the others reach at once); then 1 ms sleeps.
    if (polls >= 1000) {
      pause.tv_nsec = 1000000;
      nanosleep(&pause, nullptr);
    }
  }
  return env.Undefined();
}

// abort(code): ends every process of the job (MPI_Abort on the world); does not return.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireInit(env);
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  MPI_Abort(MPI_COMM_WORLD, code);
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ready = 0, finished = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&finished);
  if (ready && !finished) Check(env, MPI_Finalize(), "MPI_Finalize");
  return env.Undefined();
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("rank", Napi::Function::New(env, Rank));
  exports.Set("size", Napi::Function::New(env, Size));
  exports.Set("localRank", Napi::Function::New(env, LocalRank));
  exports.Set("allReduceSum", Napi::Function::New(env, AllReduceSum));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  return exports;
}

}  // namespace

NODE_API_MODULE(specforge_mpi, Module)
