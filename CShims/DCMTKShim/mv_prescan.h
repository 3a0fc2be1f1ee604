// mv_prescan.h — private to the shim: a structural pre-scan of DICOM bytes before DCMTK sees them.
//
// Why: DCMTK's dcmdata parser recurses once per nested sequence (about 1.5 KiB of stack a level), so
// about 5,600 nested sequences overflow an 8 MiB stack and crash the process; it also walks a file of
// zeros for minutes before giving up. The pre-scan walks the element structure iteratively, with an
// explicit stack bounded by kMaxDepth, reading through a small window (never the whole file), and
// refuses what DCMTK must not be given. See docs/design.md ("Parser limits").
#ifndef MV_PRESCAN_H
#define MV_PRESCAN_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace mv {

// Sequences nested deeper than this are refused. Real files rarely exceed ~10 levels.
constexpr unsigned kMaxDepth = 64;
// Data elements (including items and fragments, at any depth) beyond this count are refused.
// 80,000-element files parse in well under a second; an enhanced multi-frame object with thousands of
// per-frame functional groups stays below ~250,000.
constexpr uint64_t kMaxElements = 1000000;
// A deflated dataset is refused when it inflates to more than this (a decompression bomb).
constexpr uint64_t kMaxInflated = uint64_t(1) << 30;

enum class ScanExtent {
    whole,        // DCMTK reads the whole file: scan everything
    untilPixels,  // DCMTK stops at the top-level Pixel Data tag: so does the scan
};

// Where the top-level Pixel Data element is, as the scan found it (locatePixelData).
struct PixelLocation {
    bool found = false;           // a top-level (7FE0,0010) element header starts at elementOffset
    uint64_t elementOffset = 0;   // offset of its tag in the input
    bool explicitVR = true, bigEndian = false;
    bool deflated = false;        // offsets would be in the inflated stream: the caller refuses
    std::string transferSyntax;   // from the meta header; empty for a bare dataset (see explicitVR/bigEndian)
    // Top-level Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002): value offset and length.
    bool hasOffsets = false, hasLengths = false;
    uint64_t offsetsAt = 0, offsetsLength = 0, lengthsAt = 0, lengthsLength = 0;
};

// Both return true when the bytes may be handed to DCMTK; otherwise false and a reason in *why
// (offsets, tags and limits only: never a value from the file).
bool prescanBuffer(const uint8_t *bytes, size_t length, ScanExtent extent, std::string *why);
bool prescanFd(int fd, ScanExtent extent, std::string *why);
// Reads up to `cap` bytes of the data, in order, into `dst`: the count (0 at the end), or -1 on failure.
typedef long (*StreamReadFn)(void *context, void *dst, size_t cap);
// The whole-file scan of `size` bytes read in order through `read` (never more than a window at once).
bool prescanStream(StreamReadFn read, void *context, uint64_t size, std::string *why);
// The scan of prescanBuffer(..., untilPixels, ...), noting where the top-level Pixel Data starts.
bool locatePixelData(const uint8_t *bytes, size_t length, PixelLocation *location, std::string *why);

}  // namespace mv

#endif
