// mv_shim.h — private to the shim: the helpers every entry point uses (mv_dcmtk.cpp, mv_pixels.cpp,
// mv_bulkdata.cpp).
//   setError        a reason into the caller's buffer (offsets, tags, limits: never a value from a file)
//   guarded         turns any C++ exception into a status and a message: none may cross into Swift
//   withKnownStack  runs DCMTK with at least 2 MiB of stack (a helper thread with 16 MiB otherwise)
//   refused         MV_DCM_ERR_REFUSED with the pre-scan's reason
#ifndef MV_SHIM_H
#define MV_SHIM_H

#include <pthread.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "mv_dcmtk.h"

namespace mv {

inline void setError(char *err, size_t len, const std::string &message) {
    if (err == nullptr || len == 0) return;
    std::strncpy(err, message.c_str(), len - 1);
    err[len - 1] = '\0';
}

// Second line of defence behind the pre-scan's depth bound. DCMTK recurses once per nested sequence
// (measured: about 1.5 KiB of stack a level here, so 64 levels need about 100 KiB), and so does
// convertToUTF8 and the JSON writer. Callers run on threads whose stacks we do not choose (Swift
// concurrency, NIO event loops, the fuzzer): when the current thread has less than kStackHeadroom
// left, DCMTK runs on a helper thread with a kHelperStack stack instead.
constexpr size_t kStackHeadroom = size_t(2) << 20;
constexpr size_t kHelperStack = size_t(16) << 20;

// The current thread's stack bounds, looked up once per thread: pthread_getattr_np reads and parses
// /proc/self/maps for the main thread, which cost ~0.3 ms per file on import (docs/benchmarks.md).
// A thread's stack does not move while it runs, so the first answer stays true.
inline uintptr_t stackBottom() {
    thread_local uintptr_t bottom = 0;
    thread_local bool known = false;
    if (known) return bottom;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return 0;  // not cached: try again next time
    void *low = nullptr;
    size_t size = 0;
    const bool ok = pthread_attr_getstack(&attr, &low, &size) == 0;
    pthread_attr_destroy(&attr);
    if (!ok) return 0;
    bottom = reinterpret_cast<uintptr_t>(low);
    known = true;
    return bottom;
}

inline size_t stackRemaining() {
    const uintptr_t bottom = stackBottom();
    if (bottom == 0) return 0;
    char here = 0;
    const uintptr_t sp = reinterpret_cast<uintptr_t>(&here);
    return sp > bottom ? size_t(sp - bottom) : 0;
}

template <class F>
struct StackJob {
    F *body;
    int rc = MV_DCM_ERR_INTERNAL;
    static void *run(void *p) {
        auto *job = static_cast<StackJob *>(p);
        try {
            job->rc = (*job->body)();
        } catch (...) {
            job->rc = MV_DCM_ERR_INTERNAL;
        }
        return nullptr;
    }
};

// Runs `body` (which returns a status code and never throws out) with at least kStackHeadroom of stack.
template <class F>
int withKnownStack(F body, char *err, size_t errLen) {
    if (stackRemaining() >= kStackHeadroom) return body();
    StackJob<F> job;
    job.body = &body;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, kHelperStack);
    pthread_t thread;
    const int created = pthread_create(&thread, &attr, &StackJob<F>::run, &job);
    pthread_attr_destroy(&attr);
    if (created != 0) {
        setError(err, errLen, "cannot start the parser thread (out of memory or threads)");
        return MV_DCM_ERR_INTERNAL;
    }
    pthread_join(thread, nullptr);
    return job.rc;
}

// Runs `body`, turning any C++ exception into a status and a message: none may cross into Swift.
template <class F>
int guarded(const char *what, char *err, size_t errLen, F body) {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        setError(err, errLen, std::string("out of memory while ") + what);
        return MV_DCM_ERR_INTERNAL;
    } catch (...) {
        setError(err, errLen, std::string("unexpected C++ exception while ") + what);
        return MV_DCM_ERR_INTERNAL;
    }
}

inline int refused(const std::string &why, char *err, size_t errLen) {
    setError(err, errLen, why);
    return MV_DCM_ERR_REFUSED;
}

}  // namespace mv

#endif
