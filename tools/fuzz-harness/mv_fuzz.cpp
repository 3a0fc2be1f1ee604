// mv_fuzz.cpp — libFuzzer harness over the DCMTK shim's entry points (tools/fuzz builds and runs it;
// docs/benchmarks.md has the figures). Every input goes through:
//   mv_dcm_parse_buffer    (from memory: the importer's in-memory callers, STOW-RS)
//   mv_dcm_json_from_buffer (the server's metadata route and the exporter; stops at Pixel Data)
//   mv_dcm_json_from_buffer_with BulkDataURIs above 16 bytes, then mv_dcm_bulk_value on the first
//   URI's path (it must be served) and on a path taken from the input's last bytes (bulk data route)
//   mv_dcm_parse_file      (from a file: the importer, through /proc/self/fd like Importer.swift)
//   mv_dcm_prescan_stream  (a received instance sealed on disk, read in pieces: it must agree with the
//                          file's pre-scan), then mv_dcm_parse_until_pixels on the whole input and on
//                          its first half (the importer's two passes over a large STOW-RS instance)
//   mv_dcm_pixel_layout_read, and when it succeeds, the first frame (native bytes, or the first
//   fragment after the offset table) through mv_dcm_decode_frame and mv_dcm_render (frames route,
//   rendered and thumbnail routes; docs/pixels.md), with a 4 MiB frame limit
// A crash, an AddressSanitizer report, a leak, or a status code outside the documented ones fails.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

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
    if (rc < MV_DCM_OK || rc > MV_DCM_ERR_NOT_FOUND || rc == MV_DCM_ERR_DICTIONARY) {
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

// /metadata's threshold is 1 KiB; a small one here makes the fuzzer's short inputs reach the URI path.
constexpr size_t kFuzzBulkThreshold = 16;

uint32_t le32(const uint8_t *p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// The pixel entry points: layout, then the first frame decoded and rendered.
void fuzzPixels(const uint8_t *data, size_t size) {
    char err[512];
    err[0] = '\0';
    mv_dcm_pixel_layout layout;
    int rc = mv_dcm_pixel_layout_read(data, size, &layout, err, sizeof err);
    checkStatus(rc, "mv_dcm_pixel_layout_read", err);
    if (rc != MV_DCM_OK) return;
    if (layout.value_offset > size) {
        std::fprintf(stderr, "pixel layout: value offset %llu past the input's %zu bytes\n", (unsigned long long)layout.value_offset, size);
        std::abort();
    }
    const uint8_t *frame = data + layout.value_offset;
    size_t frameLength = size - size_t(layout.value_offset);
    if (layout.encapsulated) {
        // Skip the Basic Offset Table item; the frame is the first fragment (cut at the input's end).
        if (frameLength < 8) return;
        const uint64_t bot = le32(frame + 4);
        if (bot > frameLength - 8 || frameLength - 8 - bot < 8) return;
        frame += 8 + bot;
        frameLength -= 8 + bot;
        const uint32_t fragment = le32(frame + 4);
        frame += 8;
        frameLength = std::min<size_t>(frameLength - 8, fragment);
    } else {
        frameLength = std::min<uint64_t>(frameLength, layout.frame_size);
    }
    const size_t limit = size_t(4) << 20;
    void *out = nullptr;
    size_t outLength = 0;
    char photometric[20];
    uint16_t planar = 0;
    err[0] = '\0';
    rc = mv_dcm_decode_frame(&layout, frame, frameLength, limit, &out, &outLength, photometric, &planar, err, sizeof err);
    checkStatus(rc, "mv_dcm_decode_frame", err);
    if (rc == MV_DCM_OK) {
        if (outLength != layout.frame_size || std::strlen(photometric) == 0) {
            std::fprintf(stderr, "decode_frame: %zu bytes for a frame of %llu, photometric \"%s\"\n", outLength,
                         (unsigned long long)layout.frame_size, photometric);
            std::abort();
        }
        mv_dcm_free(out);
    }
    // Rendering: the format, window and viewport come from the input's last bytes.
    const uint8_t knob = size > 0 ? data[size - 1] : 0;
    mv_dcm_render_options options;
    std::memset(&options, 0, sizeof options);
    options.format = knob & 1 ? MV_DCM_RENDER_PNG : MV_DCM_RENDER_JPEG;
    options.quality = 75;
    options.has_window = (knob >> 1) & 1;
    options.window_center = double(int(knob) * 37 - 2000);
    options.window_width = double((knob >> 2) * 11);
    options.window_function = (knob >> 2) % 3;
    options.viewport_width = (knob >> 4) & 1 ? 0 : 48;
    options.viewport_height = (knob >> 5) & 1 ? 0 : 40;
    options.max_frame_bytes = limit;
    out = nullptr;
    outLength = 0;
    err[0] = '\0';
    rc = mv_dcm_render(data, size, frame, frameLength, &options, &out, &outLength, err, sizeof err);
    checkStatus(rc, "mv_dcm_render", err);
    if (rc == MV_DCM_OK) {
        if (out == nullptr || outLength == 0) std::abort();
        mv_dcm_free(out);
    }
}

// One mv_dcm_bulk_value call; `mustExist`: the path came from the JSON writer's BulkDataURI.
void fuzzBulkValue(const uint8_t *data, size_t size, const std::vector<uint32_t> &path, bool mustExist) {
    char err[512];
    err[0] = '\0';
    void *out = nullptr;
    size_t outLength = 0;
    char vr[3];
    const int rc = mv_dcm_bulk_value(data, size, path.data(), path.size(), size_t(1) << 20, &out, &outLength, vr, err, sizeof err);
    checkStatus(rc, "mv_dcm_bulk_value", err);
    if (rc == MV_DCM_OK) {
        if (out == nullptr || std::strlen(vr) != 2) std::abort();
        if (mustExist && outLength <= kFuzzBulkThreshold) {
            std::fprintf(stderr, "bulk value: %zu bytes for a BulkDataURI above %zu\n", outLength, kFuzzBulkThreshold);
            std::abort();
        }
        mv_dcm_free(out);
    } else if (mustExist) {
        std::fprintf(stderr, "bulk value: the JSON's BulkDataURI is not served (status %d: %s)\n", rc, err);
        std::abort();
    }
}

// The JSON with BulkDataURIs, and the values they name (the first one), plus a path from the input.
void fuzzBulkData(const uint8_t *data, size_t size) {
    char err[512];
    err[0] = '\0';
    char *json = nullptr;
    size_t jsonLength = 0;
    const mv_dcm_json_options options = {kFuzzBulkThreshold, "b/"};
    const int rc = mv_dcm_json_from_buffer_with(data, size, &options, &json, &jsonLength, err, sizeof err);
    checkStatus(rc, "mv_dcm_json_from_buffer_with", err);
    if (rc == MV_DCM_OK) {
        if (std::strlen(json) != jsonLength) std::abort();
        const char *uri = std::strstr(json, "\"BulkDataURI\":\"b/");
        std::vector<uint32_t> path;
        for (const char *p = uri ? uri + 17 : nullptr; p != nullptr && *p != '"';) {
            char *end = nullptr;
            path.push_back(uint32_t(std::strtoul(p, &end, path.size() % 2 == 0 ? 16 : 10)));
            if (end == p) std::abort();
            p = *end == '/' ? end + 1 : end;
        }
        mv_dcm_free_string(json);
        if (!path.empty()) fuzzBulkValue(data, size, path, true);
    }
    // A path of 1 or 3 steps from the last 12 bytes: tag, item index (small), tag.
    if (size >= 12) {
        const uint8_t *t = data + size - 12;
        std::vector<uint32_t> path = {le32(t)};
        if (t[4] & 1) path.insert(path.end(), {uint32_t(t[5] & 3), le32(t + 8)});
        fuzzBulkValue(data, size, path, false);
    }
}

// The streamed pre-scan and the parse up to Pixel Data. `fileRefused`: mv_dcm_parse_file's pre-scan
// refused the same bytes, which the streamed one must do too, and only then.
void fuzzStream(const uint8_t *data, size_t size, bool fileRefused) {
    if (size == 0) return;
    struct Reader {
        const uint8_t *data;
        size_t size, offset;
    } reader{data, size, 0};
    char err[512];
    err[0] = '\0';
    int rc = mv_dcm_prescan_stream(
        [](void *context, void *dst, size_t cap) -> long {
            auto *r = static_cast<Reader *>(context);
            const size_t n = std::min({cap, size_t(777), r->size - r->offset});
            std::memcpy(dst, r->data + r->offset, n);
            r->offset += n;
            return long(n);
        },
        &reader, size, err, sizeof err);
    checkStatus(rc, "mv_dcm_prescan_stream", err);
    if ((rc == MV_DCM_OK) == fileRefused) {
        std::fprintf(stderr, "mv_dcm_prescan_stream (%d) and the file's pre-scan disagree\n", rc);
        std::abort();
    }
    if (rc != MV_DCM_OK) return;
    for (size_t length : {size, size / 2}) {
        err[0] = '\0';
        mv_dcm_header *h = nullptr;
        rc = mv_dcm_parse_until_pixels(data, length, &h, err, sizeof err);
        checkStatus(rc, "mv_dcm_parse_until_pixels", err);
        if (rc == MV_DCM_OK) useHeader(h);
    }
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
    fuzzStream(data, size, rc == MV_DCM_ERR_REFUSED);

    fuzzPixels(data, size);
    fuzzBulkData(data, size);
    return 0;
}
