// mv_prescan.cpp — see mv_prescan.h. No recursion anywhere in this file: nesting lives in a vector
// bounded by kMaxDepth, and values are skipped by arithmetic (files) or pointer moves (memory).
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrmz.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cctype>
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

// Reads through the caller's function, in order: a received instance decrypted as it is read
// (mv_dcm_prescan_stream), so that a large instance is walked without being held in memory or in clear.
class CallbackSource final : public Source {
  public:
    CallbackSource(StreamReadFn read, void *context, uint64_t size) : Source(size), read_(read), context_(context) {}

  private:
    size_t produce(uint8_t *dst, size_t cap) override {
        if (off_ >= size_) return 0;
        const size_t want = size_t(std::min<uint64_t>(cap, size_ - off_));
        const long got = read_(context_, dst, want);
        if (got < 0 || size_t(got) > want) {
            failure = "cannot read the instance";
            return 0;
        }
        off_ += uint64_t(got);
        return size_t(got);
    }
    StreamReadFn read_;
    void *context_;
    uint64_t off_ = 0;
};

// The rest of `inner` as inflated bytes (deflated transfer syntax), at most kMaxInflated of them.
class InflateSource final : public Source {
  public:
    explicit InflateSource(Source &inner) : Source(kNoEnd), inner_(inner) {
        std::memset(&z_, 0, sizeof z_);
        // DICOM says raw deflate (RFC 1951); DCMTK reads a zlib stream (RFC 1950) only when its global
        // dcmZlibExpectRFC1950Encoding is set (off by default): follow the same switch.
        ok_ = inflateInit2(&z_, dcmZlibExpectRFC1950Encoding.get() ? MAX_WBITS : -MAX_WBITS) == Z_OK;
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
            if (z_.avail_in == 0 && !inputEnded_) {
                size_t n = inner_.readUpTo(in_, sizeof in_);
                if (n == 0) {
                    // No more input, but inflate may still hold output it could not fit in the last
                    // call's buffer: it is called once more with none, and stops when it has nothing left.
                    inputEnded_ = true;
                } else {
                    z_.next_in = in_;
                    z_.avail_in = uInt(n);
                }
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
            if (rc == Z_BUF_ERROR && (z_.avail_in != 0 || inputEnded_)) break;
        }
        size_t got = cap - z_.avail_out;
        total_ += got;
        return got;
    }
    Source &inner_;
    z_stream z_;
    bool ok_ = false, done_ = false, inputEnded_ = false;
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

// Groups a bare dataset (no Part 10 preamble) plausibly starts with.
bool plausibleFirstGroup(uint16_t g) {
    return g == 0x0002 || g == 0x0004 || g == 0x0008 || g == 0x0010 || g == 0x0018 || g == 0x0020 || g == 0x0028;
}

class Walker {
  public:
    Walker(ScanExtent extent, std::string *why, PixelLocation *location = nullptr)
        : extent_(extent), why_(why), location_(location) {}

    // Follows DCMTK 3.6.7's own decisions (DcmFileFormat::read, DcmMetaInfo::read,
    // DcmItem::checkTransferSyntax): where the meta header ends, which transfer syntax each part is
    // read with. Where the scan cannot follow DCMTK exactly, it is the stricter of the two.
    bool run(Source &src) {
        if (!src.more()) return fail(src, "empty file");
        uint8_t head[132];
        const bool preamble = src.size() != kNoEnd && src.size() >= 132 && src.peek(head, 132) &&
                              std::memcmp(head + 128, "DICM", 4) == 0;
        if (preamble) src.skip(132);
        // DCMTK guesses the meta header's encoding from its first bytes, and reads one when the
        // next tag's group is 0002 in either byte order.
        uint8_t first[6] = {0, 0, 0, 0, 0, 0};
        const bool six = src.peek(first, 6);
        bool meta = false;
        std::string transferSyntax;
        if (src.peek(first, 2) && ((first[0] == 2 && first[1] == 0) || (first[0] == 0 && first[1] == 2))) {
            meta = true;
            const Encoding metaEnc = six ? detectEncoding(first) : Encoding{};
            if (!walk(src, metaEnc, "the file meta header", Phase::meta, &transferSyntax)) return false;
        }
        Encoding enc;
        bool deflated = false;
        bool known = false;
        if (!transferSyntax.empty()) {
            DcmXfer xfer(transferSyntax.c_str());
            if (xfer.getXfer() != EXS_Unknown) {
                known = true;
                enc.explicitVR = xfer.isExplicitVR();
                enc.bigEndian = xfer.isBigEndian();
                deflated = xfer.getStreamCompression() != ESC_none;
            }
        }
        if (!src.more()) {
            if (!src.failure.empty()) return fail(src, src.failure);
            return meta || fail(src, "not a DICOM file: no data elements; refused");
        }
        if (location_ != nullptr) location_->deflated = deflated;
        if (deflated) {
            InflateSource inflated(src);
            if (!inflated.failure.empty()) return fail(src, inflated.failure);
            bool ok = walk(inflated, enc, "the inflated dataset", Phase::dataset, nullptr);
            if (ok && inflated.exceeded())
                return fail(inflated, "the deflated dataset inflates to more than " +
                                          std::to_string(kMaxInflated >> 20) + " MiB; refused");
            return ok;
        }
        uint8_t d[6];
        if (!src.peek(d, 6)) return fail(src, "not a DICOM file: too short for a data element; refused");
        if (!preamble && !meta) {
            // Not DCMTK's rule but ours: a bare dataset must start like one.
            const uint16_t le = u16(d, false), be = u16(d, true);
            if (!plausibleFirstGroup(le) && !plausibleFirstGroup(be))
                return fail(src, "not a DICOM file: no 'DICM' marker at offset 128, and the first bytes (tag " +
                                     tagText(le, u16(d + 2, false)) + ") do not start a DICOM dataset; refused");
        }
        if (!known) enc = detectEncoding(d);
        if (location_ != nullptr) {
            location_->transferSyntax = transferSyntax;
            location_->explicitVR = enc.explicitVR;
            location_->bigEndian = enc.bigEndian;
        }
        return walk(src, enc, "the file", Phase::dataset, nullptr);
    }

  private:
    enum class Phase { meta, dataset };

    // DcmItem::checkTransferSyntax: is the first tag known to the dictionary when read little or
    // big endian, and are bytes 4-5 a standard VR?
    static bool foundVR(const uint8_t *p) {
        if (!std::isalpha(p[0]) || !std::isalpha(p[1])) return false;
        const char name[3] = {char(p[0]), char(p[1]), 0};
        return DcmVR(name).isStandard();
    }
    static Encoding detectEncoding(const uint8_t *p) {
        const uint16_t g = u16(p, false), e = u16(p + 2, false);
        const bool littleBad = DcmTag(g, e).error().bad();
        const bool bigBad = DcmTag(u16(p, true), u16(p + 2, true)).error().bad();
        bool big;
        if (littleBad && bigBad) big = false;
        else if (littleBad) big = true;
        else if (bigBad) big = false;
        else big = g > 0xff && u16(p, true) <= 0xff;
        return Encoding{foundVR(p + 4), big};
    }

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

    // The transfer syntax UID as DCMTK's lookForXfer sees it is the value up to its first NUL, spaces
    // removed; an empty string there names DCMTK's virtual "Big Endian Implicit" syntax, and other
    // damage makes DCMTK guess. Rather than follow every such case, only a well-formed UID (digits and
    // dots, at most 64, padded by trailing spaces or NULs) is accepted.
    static bool readTransferSyntax(Source &src, uint32_t len, std::string *uid) {
        if (len == kUndefined || len == 0 || len > 64) return false;
        char raw[64];
        if (!src.peek(raw, len)) return false;
        size_t end = len;
        while (end > 0 && (raw[end - 1] == ' ' || raw[end - 1] == '\0')) end--;
        if (end == 0) return false;
        for (size_t i = 0; i < end; i++)
            if (!(std::isdigit(static_cast<unsigned char>(raw[i])) || raw[i] == '.')) return false;
        uid->assign(raw, end);
        return true;
    }

    // Walks one part of the input: the file meta header (Phase::meta: until DcmMetaInfo::read would
    // stop, noting the transfer syntax) or the dataset (until the end, or its top-level Pixel Data).
    bool walk(Source &src, Encoding top, const char *where, Phase phase, std::string *transferSyntax) {
        std::vector<Level> st;
        st.reserve(kMaxDepth * 2 + 2);
        unsigned depth = 0;  // open sequences (and fragment lists)
        uint8_t h[12];
        // Meta header extent, as DcmMetaInfo::read: a first element (0002,0000) gives the length
        // (32-bit arithmetic, as DCMTK's); without it, elements are read while their group is 0002.
        const uint64_t metaStart = src.pos();
        bool firstElement = true, metaLengthKnown = false, sawTransferSyntax = false;
        uint32_t metaLength = 0;
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
            if (!cur && phase == Phase::meta && !firstElement) {
                uint8_t t[2];
                const bool more = metaLengthKnown ? src.pos() - metaStart < metaLength
                                                  : src.peek(t, 2) && ((t[0] == 2 && t[1] == 0) || (t[0] == 0 && t[1] == 2));
                if (!more) return true;
            }
            const uint64_t at = src.pos();
            if (!src.read(h, 8)) {
                if (!src.failure.empty()) return fail(src, src.failure);
                if (cur) return failAt(src, cur->start, std::string("truncated: ") + where +
                                                            " ends inside a sequence or item that starts here");
                return failAt(src, at, std::string("truncated: ") + where + " ends inside a data element header");
            }
            const uint16_t g = u16(h, enc.bigEndian), e = u16(h + 2, enc.bigEndian);
            const uint64_t limit = enclosingEnd(src, st);
            // DCMTK's readUntilTag stops at the first top-level tag at or above the stop tag, unread.
            if (!cur && phase == Phase::dataset && extent_ == ScanExtent::untilPixels &&
                (g > 0x7FE0 || (g == 0x7FE0 && e >= 0x0010))) {
                if (location_ != nullptr && g == 0x7FE0 && e == 0x0010) {
                    location_->found = true;
                    location_->elementOffset = at;
                }
                return true;
            }

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

            // A data element. Explicit VR: the length field's size follows DCMTK's DcmVR (an unknown VR
            // of two capitals is a "future" VR with a 4-byte length, read like UN; other unknown VRs,
            // zero padding for instance, have a 2-byte length).
            DcmEVR evr = EVR_UNKNOWN;
            uint32_t len;
            size_t headerSize = 8;
            if (enc.explicitVR) {
                const char name[3] = {char(h[4]), char(h[5]), 0};
                const DcmVR vr(name);
                evr = vr.getEVR();
                if (vr.usesExtendedLengthEncoding()) {
                    if (!src.read(h + 8, 4)) return failAt(src, at, std::string("truncated: ") + where +
                                                                         " ends inside a data element header");
                    len = u32(h + 8, enc.bigEndian);
                    headerSize = 12;
                } else {
                    len = u16(h + 6, enc.bigEndian);
                }
            } else {
                len = u32(h + 4, enc.bigEndian);
                evr = DcmTag(g, e).getEVR();
            }
            const bool sq = evr == EVR_SQ;
            const bool unknownVR = evr == EVR_UN || evr == EVR_UNKNOWN || evr == EVR_UNKNOWN2B;
            if (!countElement(src, at)) return false;
            const bool pixelData = g == 0x7FE0 && e == 0x0010;
            if (!cur && phase == Phase::meta) {
                if (firstElement && g == 0x0002 && e == 0x0000) {
                    uint8_t v[4];
                    if (len == kUndefined || len < 4 || (enc.explicitVR && evr != EVR_UL) || !src.peek(v, 4))
                        return failAt(src, at, "the file meta group length (0002,0000) is malformed");
                    metaLength = uint32_t(u32(v, enc.bigEndian) + uint32_t(headerSize) + len);
                    metaLengthKnown = metaLength != kUndefined;
                    if (metaLength == 0) {  // DCMTK reads no further meta element
                        metaLengthKnown = true;
                    }
                }
                firstElement = false;
                // DcmFileFormat::lookForXfer reads the UID only from a string element; a value under any
                // other string VR is refused rather than guessed, a non-string one is ignored as DCMTK does.
                if (g == 0x0002 && e == 0x0010 && enc.explicitVR && evr != EVR_UI && DcmVR(evr).isaString())
                    return failAt(src, at, "the transfer syntax (0002,0010) is not encoded as UI");
                const bool readable = !enc.explicitVR || evr == EVR_UI;
                if (g == 0x0002 && e == 0x0010 && readable && transferSyntax != nullptr && !sawTransferSyntax) {
                    sawTransferSyntax = true;
                    if (!readTransferSyntax(src, len, transferSyntax))
                        return failAt(src, at, "the transfer syntax (0002,0010) in the file meta header is not a valid UID");
                }
            }

            enum { skipValue, openSequence, openFragments } action = skipValue;
            Encoding inner = enc;
            if (len == kUndefined) {
                if (pixelData && (!enc.explicitVR || evr == EVR_OB || evr == EVR_OW || evr == EVR_ox)) {
                    action = openFragments;  // encapsulated pixel data: items holding opaque fragments
                } else if (enc.explicitVR && unknownVR) {
                    action = openSequence;  // CP 246: an implicit VR little endian sequence
                    inner = Encoding{false, false};
                } else if (!enc.explicitVR || sq || evr == EVR_OB || evr == EVR_OW || evr == EVR_ox) {
                    // Other undefined lengths are walked as sequences: the stricter reading (DCMTK
                    // either reads them so, or fails).
                    action = openSequence;
                } else {
                    return failAt(src, at, "data element " + tagText(g, e) + " (VR " +
                                               std::string(DcmVR(evr).getVRName()) + ") has undefined length");
                }
            } else {
                if (src.pos() + len > limit)
                    return failAt(src, at, "data element " + tagText(g, e) + ": length " + std::to_string(len) +
                                               " runs past the end of " +
                                               (limit == src.size() ? std::string(where) : "its sequence item"));
                if (sq) {
                    action = openSequence;
                } else if (!pixelData && len >= 8 && unknownVR) {
                    // DCMTK may read an unknown element whose value starts with an item tag as a
                    // sequence: the scan does (the stricter reading).
                    const Encoding in = enc.explicitVR ? Encoding{false, false} : enc;
                    uint8_t first[4];
                    if (src.peek(first, 4) && u16(first, in.bigEndian) == 0xFFFE && u16(first + 2, in.bigEndian) == 0xE000) {
                        action = openSequence;
                        inner = in;
                    }
                }
            }
            if (action == skipValue) {
                if (location_ != nullptr && !cur && phase == Phase::dataset && g == 0x7FE0 && (e == 0x0001 || e == 0x0002)) {
                    if (e == 0x0001) {
                        location_->hasOffsets = true;
                        location_->offsetsAt = src.pos();
                        location_->offsetsLength = len;
                    } else {
                        location_->hasLengths = true;
                        location_->lengthsAt = src.pos();
                        location_->lengthsLength = len;
                    }
                }
                if (!src.skip(len))
                    return failAt(src, at, "data element " + tagText(g, e) + ": length " + std::to_string(len) +
                                               " runs past the end of " + where);
                continue;
            }
            if (phase == Phase::meta)  // never in real files; DCMTK would search inside it for the UID
                return failAt(src, at, "a sequence in the file meta header");
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
    PixelLocation *location_;
    uint64_t elements_ = 0;
};

}  // namespace

bool prescanBuffer(const uint8_t *bytes, size_t length, ScanExtent extent, std::string *why) {
    MemorySource src(bytes, length);
    return Walker(extent, why).run(src);
}

bool locatePixelData(const uint8_t *bytes, size_t length, PixelLocation *location, std::string *why) {
    *location = PixelLocation();
    MemorySource src(bytes, length);
    return Walker(ScanExtent::untilPixels, why, location).run(src);
}

bool prescanStream(StreamReadFn read, void *context, uint64_t size, std::string *why) {
    CallbackSource src(read, context, size);
    return Walker(ScanExtent::whole, why).run(src);
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
