// mv_prescan.cpp — see mv_prescan.h. No recursion anywhere in this file: nesting lives in a vector
// bounded by kMaxDepth, and values are skipped by arithmetic (files) or pointer moves (memory).
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "mv_prescan.h"

namespace mv {
namespace {

const uint32_t kUndefined = 0xFFFFFFFFu;
const uint64_t kNoEnd = UINT64_MAX;

// ---------------------------------------------------------------------------------------------
// Byte sources: forward-only, with a small look-ahead window.

class Source {
  public:
    virtual ~Source() = default;
    // Total size when known (memory, regular files); kNoEnd for inflated data.
    uint64_t size() const { return size_; }
    uint64_t pos() const { return base_ + head_; }
    // Is there at least one more byte?
    bool more() { return ensure(1); }
    bool read(void *out, size_t n) {
        if (!ensure(n)) return false;
        std::memcpy(out, window_.data() + head_, n);
        head_ += n;
        return true;
    }
    bool peek(void *out, size_t n) {
        if (!ensure(n)) return false;
        std::memcpy(out, window_.data() + head_, n);
        return true;
    }
    // Copies what is available (at least one byte unless the data has ended), up to n.
    size_t readUpTo(void *out, size_t n) {
        if (!ensure(1)) return 0;
        size_t k = std::min(n, tail_ - head_);
        std::memcpy(out, window_.data() + head_, k);
        head_ += k;
        return k;
    }
    // Moves forward n bytes; false when the data ends first.
    bool skip(uint64_t n) {
        const size_t avail = tail_ - head_;
        if (n <= avail) {
            head_ += size_t(n);
            return true;
        }
        n -= avail;
        base_ += tail_;
        head_ = tail_ = 0;
        const uint64_t skipped = skipRaw(n);
        base_ += skipped;
        return skipped == n;
    }
    // Set when the underlying data could not be read (I/O error, corrupt deflate stream).
    std::string failure;

  protected:
    explicit Source(uint64_t size) : size_(size), window_(64 * 1024) {}
    // Appends up to cap bytes to dst; 0 at the end (or on failure, with `failure` set).
    virtual size_t produce(uint8_t *dst, size_t cap) = 0;
    // Skips up to n bytes of not-yet-produced data; returns how many were skipped.
    virtual uint64_t skipRaw(uint64_t n) {
        uint8_t scratch[16384];
        uint64_t done = 0;
        while (done < n) {
            size_t got = produce(scratch, size_t(std::min<uint64_t>(sizeof scratch, n - done)));
            if (got == 0) break;
            done += got;
        }
        return done;
    }
    uint64_t size_;

  private:
    bool ensure(size_t n) {
        if (tail_ - head_ >= n) return true;
        if (head_ > 0) {
            std::memmove(window_.data(), window_.data() + head_, tail_ - head_);
            base_ += head_;
            tail_ -= head_;
            head_ = 0;
        }
        while (tail_ < n) {
            size_t got = produce(window_.data() + tail_, window_.size() - tail_);
            if (got == 0) return false;
            tail_ += got;
        }
        return true;
    }
    std::vector<uint8_t> window_;
    uint64_t base_ = 0;  // stream offset of window_[0]
    size_t head_ = 0, tail_ = 0;
};

class MemorySource final : public Source {
  public:
    MemorySource(const uint8_t *p, size_t n) : Source(n), p_(p), n_(n) {}

  private:
    size_t produce(uint8_t *dst, size_t cap) override {
        size_t k = std::min(cap, n_ - off_);
        std::memcpy(dst, p_ + off_, k);
        off_ += k;
        return k;
    }
    uint64_t skipRaw(uint64_t n) override {
        uint64_t k = std::min<uint64_t>(n, n_ - off_);
        off_ += size_t(k);
        return k;
    }
    const uint8_t *p_;
    size_t n_, off_ = 0;
};

// Reads with pread through the window: a 2 GB file costs a few small reads, not 2 GB of memory.
class FdSource final : public Source {
  public:
    FdSource(int fd, uint64_t size) : Source(size), fd_(fd) {}

  private:
    size_t produce(uint8_t *dst, size_t cap) override {
        if (off_ >= size_) return 0;
        size_t want = size_t(std::min<uint64_t>(cap, size_ - off_));
        for (;;) {
            ssize_t got = ::pread(fd_, dst, want, off_t(off_));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                failure = std::string("cannot read file: ") + std::strerror(errno);
                return 0;
            }
            off_ += uint64_t(got);
            return size_t(got);
        }
    }
    uint64_t skipRaw(uint64_t n) override {
        uint64_t k = std::min<uint64_t>(n, size_ > off_ ? size_ - off_ : 0);
        off_ += k;
        return k;
    }
    int fd_;
    uint64_t off_ = 0;
};

// The rest of `inner` as inflated bytes (deflated transfer syntax), at most kMaxInflated of them.
class InflateSource final : public Source {
  public:
    explicit InflateSource(Source &inner) : Source(kNoEnd), inner_(inner) {
        std::memset(&z_, 0, sizeof z_);
        // DICOM says raw deflate (RFC 1951); DCMTK also accepts a zlib header: so do we.
        uint8_t head[2] = {0, 0};
        const bool zlibHeader = inner_.peek(head, 2) && (head[0] & 0x0F) == 8 && ((head[0] << 8) | head[1]) % 31 == 0;
        ok_ = inflateInit2(&z_, zlibHeader ? MAX_WBITS : -MAX_WBITS) == Z_OK;
        if (!ok_) failure = "cannot initialise zlib";
    }
    ~InflateSource() override {
        if (ok_) inflateEnd(&z_);
    }
    bool exceeded() const { return total_ >= kMaxInflated; }

  private:
    size_t produce(uint8_t *dst, size_t cap) override {
        if (!ok_ || done_) return 0;
        if (total_ >= kMaxInflated) return 0;
        cap = size_t(std::min<uint64_t>(cap, kMaxInflated - total_));
        z_.next_out = dst;
        z_.avail_out = uInt(cap);
        while (z_.avail_out == cap) {
            if (z_.avail_in == 0) {
                size_t n = inner_.readUpTo(in_, sizeof in_);
                if (n == 0) break;
                z_.next_in = in_;
                z_.avail_in = uInt(n);
            }
            int rc = inflate(&z_, Z_NO_FLUSH);
            if (rc == Z_STREAM_END) {
                done_ = true;
                break;
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                failure = "the deflated dataset is corrupt";
                done_ = true;
                break;
            }
            if (rc == Z_BUF_ERROR && z_.avail_in != 0) break;
        }
        size_t got = cap - z_.avail_out;
        total_ += got;
        return got;
    }
    Source &inner_;
    z_stream z_;
    bool ok_ = false, done_ = false;
    uint64_t total_ = 0;
    uint8_t in_[4096];
};

// ---------------------------------------------------------------------------------------------
// The walk.

struct Encoding {
    bool explicitVR = true;
    bool bigEndian = false;
};

std::string hex4(unsigned v) {
    char b[8];
    std::snprintf(b, sizeof b, "%04X", v & 0xFFFFu);
    return b;
}
std::string tagText(uint16_t g, uint16_t e) { return "(" + hex4(g) + "," + hex4(e) + ")"; }

uint16_t u16(const uint8_t *p, bool be) { return be ? uint16_t(p[0] << 8 | p[1]) : uint16_t(p[1] << 8 | p[0]); }
uint32_t u32(const uint8_t *p, bool be) {
    return be ? (uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3])
              : (uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0]);
}

// VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 7.1.2).
bool longLengthVR(const char vr[2]) {
    static const char *const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char *v : kLong)
        if (vr[0] == v[0] && vr[1] == v[1]) return true;
    return false;
}

bool standardVR(const char vr[2]) {
    static const char *const kAll[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO",
                                       "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ",
                                       "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};
    for (const char *v : kAll)
        if (vr[0] == v[0] && vr[1] == v[1]) return true;
    return false;
}

// Groups a bare dataset (no Part 10 preamble) plausibly starts with.
bool plausibleFirstGroup(uint16_t g) {
    return g == 0x0002 || g == 0x0004 || g == 0x0008 || g == 0x0010 || g == 0x0018 || g == 0x0020 || g == 0x0028;
}

// What the dictionary says an implicit-VR element is: a sequence, something else, or unknown.
enum class DictVR { sequence, other, unknown };
DictVR dictionaryVR(uint16_t g, uint16_t e) {
    const DcmEVR evr = DcmTag(g, e).getEVR();
    if (evr == EVR_SQ) return DictVR::sequence;
    if (evr == EVR_UNKNOWN || evr == EVR_UNKNOWN2B || evr == EVR_UN) return DictVR::unknown;
    return DictVR::other;
}

class Walker {
  public:
    Walker(ScanExtent extent, std::string *why) : extent_(extent), why_(why) {}

    bool run(Source &src) {
        if (!src.more()) return fail(src, "empty file");
        uint8_t head[132];
        uint64_t metaAt = kNoEnd;
        const bool has132 = src.size() >= 132 && src.peek(head, 132);
        if (has132 && std::memcmp(head + 128, "DICM", 4) == 0) {
            metaAt = 132;
        } else if (src.peek(head, 6) && u16(head, false) == 0x0002) {
            metaAt = 0;  // file meta without a preamble, as DCMTK accepts it
        }
        Encoding enc;
        bool autodetect = true;
        bool deflated = false;
        if (metaAt != kNoEnd) {
            src.skip(metaAt);
            std::string transferSyntax;
            if (!readMeta(src, &transferSyntax)) return false;
            if (!transferSyntax.empty()) {
                DcmXfer xfer(transferSyntax.c_str());
                if (xfer.getXfer() != EXS_Unknown) {
                    autodetect = false;
                    enc.explicitVR = xfer.isExplicitVR();
                    enc.bigEndian = xfer.isBigEndian();
                    deflated = xfer.getStreamCompression() != ESC_none;
                }
            }
        }
        if (deflated) {
            InflateSource inflated(src);
            if (!inflated.failure.empty()) return fail(src, inflated.failure);
            bool ok = walkDataset(inflated, enc, "the inflated dataset");
            if (ok && inflated.exceeded())
                return fail(inflated, "the deflated dataset inflates to more than " +
                                          std::to_string(kMaxInflated >> 20) + " MiB; refused");
            return ok;
        }
        if (autodetect) {
            uint8_t first[6];
            if (!src.more()) return metaAt != kNoEnd || fail(src, "not a DICOM file: no data elements");
            if (!src.peek(first, 6))
                return fail(src, "not a DICOM file: too short for a data element; refused");
            const uint16_t le = u16(first, false), be = u16(first, true);
            if (metaAt == kNoEnd && !plausibleFirstGroup(le) && !plausibleFirstGroup(be))
                return fail(src, "not a DICOM file: no 'DICM' marker at offset 128, and the first bytes (tag " +
                                     tagText(le, u16(first + 2, false)) +
                                     ") do not start a DICOM dataset; refused");
            enc.bigEndian = !plausibleFirstGroup(le) && plausibleFirstGroup(be);
            const char vr[2] = {char(first[4]), char(first[5])};
            enc.explicitVR = standardVR(vr);
        }
        return walkDataset(src, enc, "the file");
    }

  private:
    bool fail(Source &src, const std::string &message) {
        *why_ = src.failure.empty() ? message : src.failure;
        return false;
    }
    bool failAt(Source &src, uint64_t offset, const std::string &message) {
        return fail(src, message + " (at offset " + std::to_string(offset) + "); refused");
    }
    bool countElement(Source &src, uint64_t offset) {
        if (++elements_ <= kMaxElements) return true;
        return failAt(src, offset, "more than " + std::to_string(kMaxElements) + " DICOM data elements");
    }

    // File meta: explicit VR little endian, group 0002, no sequences.
    bool readMeta(Source &src, std::string *transferSyntax) {
        uint8_t h[12];
        while (src.peek(h, 2) && u16(h, false) == 0x0002) {
            const uint64_t at = src.pos();
            if (!src.read(h, 8)) return failAt(src, at, "truncated in the file meta header");
            const uint16_t e = u16(h + 2, false);
            const char vr[2] = {char(h[4]), char(h[5])};
            if (!standardVR(vr)) return failAt(src, at, "file meta element " + tagText(2, e) + " has no valid VR");
            uint32_t len = u16(h + 6, false);
            if (longLengthVR(vr)) {
                if (!src.read(h + 8, 4)) return failAt(src, at, "truncated in the file meta header");
                len = u32(h + 8, false);
            }
            if (len == kUndefined) return failAt(src, at, "file meta element " + tagText(2, e) + " has undefined length");
            if (!countElement(src, at)) return false;
            if (src.size() != kNoEnd && src.pos() + len > src.size())
                return failAt(src, at, "file meta element " + tagText(2, e) + ": length " + std::to_string(len) +
                                           " runs past the end of the file");
            if (e == 0x0010 && len <= 64) {
                char uid[65] = {0};
                if (!src.read(uid, len)) return failAt(src, at, "truncated in the file meta header");
                *transferSyntax = uid;
                while (!transferSyntax->empty() && (transferSyntax->back() == ' ' || transferSyntax->back() == '\0'))
                    transferSyntax->pop_back();
            } else if (!src.skip(len)) {
                return failAt(src, at, "truncated in the file meta header");
            }
        }
        return true;
    }

    struct Level {
        enum Kind { sequence, item, fragments } kind;
        uint64_t end;  // kNoEnd: undefined length, closed by a delimiter
        uint64_t start;
        Encoding enc;
    };

    uint64_t enclosingEnd(Source &src, const std::vector<Level> &st) const {
        for (auto it = st.rbegin(); it != st.rend(); ++it)
            if (it->end != kNoEnd) return it->end;
        return src.size();
    }

    bool walkDataset(Source &src, Encoding top, const char *where) {
        std::vector<Level> st;
        st.reserve(kMaxDepth * 2 + 2);
        unsigned depth = 0;  // open sequences (and fragment lists)
        uint8_t h[12];
        for (;;) {
            Level *cur = st.empty() ? nullptr : &st.back();
            const Encoding enc = cur ? cur->enc : top;
            if (cur && cur->end != kNoEnd && src.pos() >= cur->end) {
                if (src.pos() > cur->end)
                    return failAt(src, cur->start, "contents run past the length of the enclosing sequence or item");
                if (cur->kind != Level::item) depth--;
                st.pop_back();
                continue;
            }
            if (!cur && !src.more()) return src.failure.empty() || fail(src, src.failure);
            const uint64_t at = src.pos();
            if (!src.read(h, 8)) {
                if (!src.failure.empty()) return fail(src, src.failure);
                if (cur) return failAt(src, cur->start, std::string("truncated: ") + where +
                                                            " ends inside a sequence or item that starts here");
                return failAt(src, at, std::string("truncated: ") + where + " ends inside a data element header");
            }
            const uint16_t g = u16(h, enc.bigEndian), e = u16(h + 2, enc.bigEndian);
            const uint64_t limit = enclosingEnd(src, st);

            if (g == 0xFFFE) {  // item, item delimiter, sequence delimiter: tag + 4-byte length, no VR
                const uint32_t len = u32(h + 4, enc.bigEndian);
                if (!countElement(src, at)) return false;
                if (cur && cur->kind == Level::item && e == 0xE00D) {
                    if (cur->end != kNoEnd && src.pos() != cur->end)
                        return failAt(src, at, "item delimiter inside a defined-length item");
                    st.pop_back();
                    continue;
                }
                if (cur && cur->kind != Level::item && e == 0xE0DD) {
                    if (cur->end != kNoEnd && src.pos() != cur->end)
                        return failAt(src, at, "sequence delimiter inside a defined-length sequence");
                    st.pop_back();
                    depth--;
                    continue;
                }
                if (cur && cur->kind == Level::sequence && e == 0xE000) {
                    if (len != kUndefined && src.pos() + len > limit)
                        return failAt(src, at, "item length " + std::to_string(len) + " runs past the end of " +
                                                   (limit == src.size() ? std::string(where) : "its sequence"));
                    st.push_back({Level::item, len == kUndefined ? kNoEnd : src.pos() + len, at, enc});
                    continue;
                }
                if (cur && cur->kind == Level::fragments && e == 0xE000) {
                    if (len == kUndefined) return failAt(src, at, "pixel data fragment with undefined length");
                    if (src.pos() + len > limit || !src.skip(len))
                        return failAt(src, at, "pixel data fragment length " + std::to_string(len) +
                                                   " runs past the end of " + where);
                    continue;
                }
                return failAt(src, at, "unexpected item tag " + tagText(g, e));
            }
            if (cur && cur->kind != Level::item)
                return failAt(src, at, "data element " + tagText(g, e) + " where a sequence item was expected");

            // A data element.
            char vr[2] = {0, 0};
            uint32_t len;
            if (enc.explicitVR) {
                vr[0] = char(h[4]);
                vr[1] = char(h[5]);
                bool longLength = longLengthVR(vr);
                if (!standardVR(vr)) {
                    // As DCMTK does (DcmVR::setVR): an unknown VR of two capital letters is a future VR
                    // with a 4-byte length, read like UN; anything else (say, zero padding at the end of
                    // a file) has a 2-byte length and an opaque value.
                    const bool capitals = vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z';
                    longLength = capitals;
                    vr[0] = capitals ? 'U' : '?';
                    vr[1] = capitals ? 'N' : '?';
                }
                if (longLength) {
                    if (!src.read(h + 8, 4)) return failAt(src, at, std::string("truncated: ") + where +
                                                                         " ends inside a data element header");
                    len = u32(h + 8, enc.bigEndian);
                } else {
                    len = u16(h + 6, enc.bigEndian);
                }
            } else {
                len = u32(h + 4, enc.bigEndian);
            }
            if (!countElement(src, at)) return false;
            const bool pixelData = g == 0x7FE0 && e == 0x0010;
            if (!cur && pixelData && extent_ == ScanExtent::untilPixels) return true;

            enum { skipValue, openSequence, openFragments } action = skipValue;
            Encoding inner = enc;
            if (len == kUndefined) {
                if (enc.explicitVR) {
                    if (vr[0] == 'S' && vr[1] == 'Q') action = openSequence;
                    else if (vr[0] == 'U' && vr[1] == 'N') {  // CP 246: read as an implicit VR LE sequence
                        action = openSequence;
                        inner = Encoding{false, false};
                    } else if (vr[0] == 'O' && (vr[1] == 'B' || vr[1] == 'W')) action = openFragments;
                    else return failAt(src, at, "data element " + tagText(g, e) + " (VR " + std::string(vr, 2) +
                                                    ") has undefined length");
                } else {
                    action = pixelData ? openFragments : openSequence;
                }
            } else {
                if (src.pos() + len > limit)
                    return failAt(src, at, "data element " + tagText(g, e) + ": length " + std::to_string(len) +
                                               " runs past the end of " +
                                               (limit == src.size() ? std::string(where) : "its sequence item"));
                if (enc.explicitVR && vr[0] == 'S' && vr[1] == 'Q') {
                    action = openSequence;
                } else if (!pixelData && len >= 8 && (!enc.explicitVR || (vr[0] == 'U' && vr[1] == 'N'))) {
                    // DCMTK reads these as sequences when the dictionary says so (implicit VR) or when
                    // the value starts with an item tag (UN, unknown private tags): so must the scan.
                    const bool implicitInside = !enc.explicitVR || vr[0] == 'U';
                    const Encoding in = vr[0] == 'U' ? Encoding{false, false} : enc;
                    const DictVR dict = enc.explicitVR ? DictVR::unknown : dictionaryVR(g, e);
                    uint8_t first[4];
                    const bool startsWithItem = src.peek(first, 4) && u16(first, in.bigEndian) == 0xFFFE &&
                                                u16(first + 2, in.bigEndian) == 0xE000;
                    if (dict == DictVR::sequence || (dict == DictVR::unknown && startsWithItem)) {
                        action = openSequence;
                        if (implicitInside) inner = in;
                    }
                } else if (!enc.explicitVR && len < 8 && dictionaryVR(g, e) == DictVR::sequence) {
                    action = openSequence;
                }
            }
            if (action == skipValue) {
                if (!src.skip(len))
                    return failAt(src, at, "data element " + tagText(g, e) + ": length " + std::to_string(len) +
                                               " runs past the end of " + where);
                continue;
            }
            if (depth + 1 > kMaxDepth)
                return fail(src, "DICOM nesting deeper than " + std::to_string(kMaxDepth) + " levels (sequence " +
                                     tagText(g, e) + " at offset " + std::to_string(at) + "); refused");
            depth++;
            st.push_back({action == openSequence ? Level::sequence : Level::fragments,
                          len == kUndefined ? kNoEnd : src.pos() + len, at, inner});
        }
    }

    ScanExtent extent_;
    std::string *why_;
    uint64_t elements_ = 0;
};

}  // namespace

bool prescanBuffer(const uint8_t *bytes, size_t length, ScanExtent extent, std::string *why) {
    MemorySource src(bytes, length);
    return Walker(extent, why).run(src);
}

bool prescanFd(int fd, ScanExtent extent, std::string *why) {
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        *why = std::string("cannot read file: ") + std::strerror(errno);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        *why = "not a regular file; refused";
        return false;
    }
    FdSource src(fd, uint64_t(st.st_size));
    return Walker(extent, why).run(src);
}

}  // namespace mv
