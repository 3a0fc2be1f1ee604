/*
 * mv_sys.h — Linux calls Swift cannot import directly (prctl is variadic; struct ucred needs
 * _GNU_SOURCE). Every symbol carries the `mv_sys_` prefix.
 */
#ifndef MV_SYS_H
#define MV_SYS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Makes the process non-dumpable and sets the core-file limit to zero, so that no core dump can
 * carry keys or patient data out of memory. Returns 0 on success, -1 with errno set. */
int mv_sys_disable_core_dumps(void);

/* syncfs(2): flushes every dirty page and the journal of the filesystem holding `fd`. Used for group
 * durability: one call makes a whole batch of blob files and renames durable. 0 or -1 with errno. */
int mv_sys_syncfs(int fd);

/* memfd_create(2) with MFD_CLOEXEC: an anonymous file in memory, never on a filesystem. Holds a
 * DICOM instance that arrives over a connection (STOW-RS) until it is sealed: clear bytes never
 * touch the disk. Returns the descriptor, or -1 with errno set. */
int mv_sys_memfd(const char *name);

/* open(2) of an unnamed regular file in `directory` (O_TMPFILE | O_RDWR | O_CLOEXEC, mode 0600): it
 * has no name, so nothing else can open or list it, and it vanishes when closed or on a crash. Holds a
 * received instance too large for memory, sealed. Returns the descriptor, or -1 with errno set
 * (EOPNOTSUPP or EISDIR where the filesystem lacks O_TMPFILE). */
int mv_sys_open_unnamed(const char *directory);

/* The peer of a Unix domain socket (SO_PEERCRED). Same layout as Linux's struct ucred, which
 * Swift cannot import without _GNU_SOURCE. */
typedef struct mv_sys_ucred {
    int pid;
    unsigned int uid;
    unsigned int gid;
} mv_sys_ucred;

#ifdef __cplusplus
}
#endif

#endif
