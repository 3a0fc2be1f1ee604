// mv_fuzz.cpp — libFuzzer harness over the DCMTK shim's three parse entry points (tools/fuzz builds
// and runs it; docs/benchmarks.md has the figures). Every input goes through:
//   mv_dcm_parse_buffer    (from memory: the importer's in-memory callers, STOW-RS)
//   mv_dcm_json_from_buffer (the server's metadata route and the exporter; stops at Pixel Data)
//   mv_dcm_parse_file      (from a file: the importer, through /proc/self/fd like Importer.swift)
// A crash, an AddressSanitizer report, a leak, or a status code outside the documented ones fails.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mv_dcmtk.h"

namespace {

int fileForInputs() {
    static int fd = [] {
        int f = memfd_create("mv-fuzz-input", MFD_CLOEXEC);
        if (f < 0) {
            std::perror("memfd_create");
            std::abort();
        }
        return f;
    }();
    return fd;
}

void checkStatus(int rc, const char *entry, const char *err) {
    if (rc < MV_DCM_OK || rc > MV_DCM_ERR_REFUSED || rc == MV_DCM_ERR_DICTIONARY) {
        std::fprintf(stderr, "%s returned undocumented status %d (%s)\n", entry, rc, err);
        std::abort();
    }
    // MV_DCM_ERR_INTERNAL means an exception escaped DCMTK or memory ran out: a bug worth a look.
    if (rc == MV_DCM_ERR_INTERNAL) {
        std::fprintf(stderr, "%s: internal failure: %s\n", entry, err);
        std::abort();
    }
    if (rc != MV_DCM_OK && err[0] == '\0') {
        std::fprintf(stderr, "%s failed with status %d and no reason\n", entry, rc);
        std::abort();
    }
}

void useHeader(mv_dcm_header *h) {
    volatile size_t sink = 0;
    static const uint16_t tags[][2] = {{0x0008, 0x0018}, {0x0010, 0x0010}, {0x0020, 0x000D}, {0x0008, 0x0005}};
    for (auto &t : tags)
        if (const char *v = mv_dcm_header_get(h, t[0], t[1])) sink += std::strlen(v);
    sink += std::strlen(mv_dcm_header_transfer_syntax(h));
    sink += size_t(mv_dcm_header_has_file_meta(h) + mv_dcm_header_charset_converted(h));
    (void)sink;
    mv_dcm_header_free(h);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    char err[512];
    if (mv_dcm_initialize(err, sizeof err) != MV_DCM_OK) {
        std::fprintf(stderr, "mv_fuzz: %s\n", err);
        std::exit(1);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    err[0] = '\0';
    mv_dcm_header *h = nullptr;
    int rc = mv_dcm_parse_buffer(data, size, &h, err, sizeof err);
    checkStatus(rc, "mv_dcm_parse_buffer", err);
    if (rc == MV_DCM_OK) useHeader(h);

    err[0] = '\0';
    char *json = nullptr;
    size_t jsonLength = 0;
    rc = mv_dcm_json_from_buffer(data, size, &json, &jsonLength, err, sizeof err);
    checkStatus(rc, "mv_dcm_json_from_buffer", err);
    if (rc == MV_DCM_OK) {
        if (std::strlen(json) != jsonLength) std::abort();
        mv_dcm_free_string(json);
    }

    const int fd = fileForInputs();
    if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != ssize_t(size))) std::abort();
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    err[0] = '\0';
    h = nullptr;
    rc = mv_dcm_parse_file(path, &h, err, sizeof err);
    checkStatus(rc, "mv_dcm_parse_file", err);
    if (rc == MV_DCM_OK) useHeader(h);
    return 0;
}
