#define _GNU_SOURCE
#include "mv_sys.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

int mv_sys_syncfs(int fd) { return syncfs(fd); }

int mv_sys_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int mv_sys_open_unnamed(const char *directory) { return open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600); }

int mv_sys_disable_core_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -1;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return -1;
    return 0;
}
