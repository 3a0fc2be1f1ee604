// mv_pixels.cpp — pixel data behind the shim: where it is (layout), one frame decoded to native little
// endian (dcmjpeg, dcmjpls, dcmdata's RLE codec), and one frame rendered to JPEG or PNG (dcmimage).
// See include/mv_dcmtk.h for the contract and docs/pixels.md for the design. Every entry point runs
// the pre-scan first, catches everything, and never allocates what a length field claims: output sizes
// come from Rows x Columns x Samples x Bits Allocated and are checked against the caller's limit first.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmimage/diregist.h"  // registers colour support in DicomImage
#include "dcmtk/dcmimage/dipipng.h"
#include "dcmtk/dcmimgle/dcmimage.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpeg/dipijpeg.h"
#include "dcmtk/dcmjpls/djdecode.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "mv_dcmtk.h"
#include "mv_prescan.h"
#include "mv_shim.h"

using mv::guarded;
using mv::refused;
using mv::setError;
using mv::withKnownStack;

namespace {

const char *const kExplicitLE = "1.2.840.10008.1.2.1";
const char *const kImplicitLE = "1.2.840.10008.1.2";
const char *const kExplicitBE = "1.2.840.10008.1.2.2";

// Values up to this size are read into memory by DCMTK for the header (LUT data, overlays); the input
// bounds them anyway (the pre-scan refuses lengths past its end).
const Uint32 kLoadAll = 0xFFFFFFFEu;
// Viewports larger than this (either side) are refused.
const uint32_t kMaxViewport = 16384;

std::once_flag gCodecsOnce;

void registerCodecs() {
    std::call_once(gCodecsOnce, [] {
        // YBR in lossy JPEG comes out as RGB (EDC_photometricInterpretation); planar configuration as
        // the JPEG decoder writes it (colour-by-pixel).
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

struct Malloced {
    void *p = nullptr;
    size_t n = 0;
    ~Malloced() { std::free(p); }
    void *release() {
        void *q = p;
        p = nullptr;
        return q;
    }
};

std::string num(uint64_t v) { return std::to_string(v); }

uint32_t le32(const uint8_t *p, bool be) {
    return be ? (uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3])
              : (uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0]);
}

bool isNative(const std::string &ts) { return ts == kExplicitLE || ts == kImplicitLE || ts == kExplicitBE; }

// The compressed syntaxes mv_dcm_decode_frame decodes, by DCMTK's enum.
bool decodable(E_TransferSyntax x) {
    switch (x) {
    case EXS_JPEGProcess1:       // 1.2.840.10008.1.2.4.50 baseline
    case EXS_JPEGProcess2_4:     // .51 extended
    case EXS_JPEGProcess14:      // .57 lossless
    case EXS_JPEGProcess14SV1:   // .70 lossless, first-order prediction
    case EXS_JPEGLSLossless:     // .80
    case EXS_JPEGLSLossy:        // .81 near-lossless
    case EXS_RLELossless:        // 1.2.840.10008.1.2.5
        return true;
    default:
        return false;
    }
}

bool isJPEGProcess(E_TransferSyntax x) {
    return x == EXS_JPEGProcess1 || x == EXS_JPEGProcess2_4 || x == EXS_JPEGProcess14 || x == EXS_JPEGProcess14SV1;
}

// dcmjpeg 3.6.7 looks for the frame header (SOF) with DJCodecDecoder::scanJpegDataForBitDepth before it
// decodes, and that walk never moves past a TEM marker (FF01): it loops forever (found by tools/fuzz).
// The same walk here, which refuses a stream where DCMTK's would reach a TEM marker.
bool jpegBitDepthScanEnds(const uint8_t *d, size_t n) {
    size_t offset = 0;
    auto segment = [&]() { offset += (size_t(d[offset + 2]) << 8 | d[offset + 3]) + 2; };
    while (offset + 4 < n) {
        const unsigned marker = unsigned(d[offset]) << 8 | d[offset + 1];
        if (marker == 0xFF01) return false;  // TEM: DCMTK's loop stops here for good
        if (marker == 0xFFFF) {
            offset += 1;  // fill byte
        } else if ((marker >= 0xFFC0 && marker <= 0xFFCF) && marker != 0xFFC4 && marker != 0xFFC8 && marker != 0xFFCC) {
            return true;  // a frame header: DCMTK reads the precision and stops
        } else if (marker >= 0xFFD0 && marker <= 0xFFD9) {
            offset += 2;  // RSTn, SOI, EOI
        } else if (marker == 0xFFC4 || marker == 0xFFC8 || marker == 0xFFCC || (marker >= 0xFFDA && marker <= 0xFFFE)) {
            segment();
        } else if (d[offset] == 0xFF && d[offset + 1] > 2 && d[offset + 1] <= 0xBF) {
            offset += 2;  // reserved markers
        } else {
            return true;  // DCMTK stops: no SOF
        }
    }
    return true;
}

// dcmdata 3.6.7's RLE decoder trusts the frame's RLE header: it copies 64 bytes whatever the fragment's
// length, and decompresses from segment offsets it does not check against the fragment (a cut or
// corrupt frame crashed the tests with a read past the buffer). The header is checked here first
// (PS3.5 G.5): at least 64 bytes, 1-15 segments, as many as Bits Allocated / 8 x Samples per Pixel,
// the first at offset 64, the others increasing and inside the frame.
bool rleHeaderValid(const mv_dcm_pixel_layout &l, const uint8_t *d, size_t n, std::string *why) {
    if (n < 64) {
        *why = "the RLE frame is shorter than its 64-byte header";
        return false;
    }
    auto at = [&](unsigned i) { return uint32_t(d[4 * i]) | uint32_t(d[4 * i + 1]) << 8 | uint32_t(d[4 * i + 2]) << 16 | uint32_t(d[4 * i + 3]) << 24; };
    const uint32_t segments = at(0);
    if (segments < 1 || segments > 15 || segments != uint32_t(l.bits_allocated / 8) * l.samples_per_pixel) {
        *why = "the RLE header names " + num(segments) + " segments, not one per byte of each sample";
        return false;
    }
    if (at(1) != 64) {
        *why = "the first RLE segment does not start right after the header";
        return false;
    }
    for (unsigned i = 1; i <= segments; i++) {
        if (at(i) >= n || (i > 1 && at(i) <= at(i - 1))) {
            *why = "RLE segment offset " + num(at(i)) + " is not inside the frame or not increasing";
            return false;
        }
    }
    return true;
}

std::string syntaxName(const std::string &uid) {
    DcmXfer x(uid.c_str());
    if (x.getXfer() == EXS_Unknown) return uid;
    return uid + " (" + x.getXferName() + ")";
}

// Reads the layout. With `keep`, the parsed header (all values loaded) is handed back for rendering.
int readLayout(const uint8_t *p, size_t n, mv_dcm_pixel_layout *out, std::unique_ptr<DcmFileFormat> *keep, char *err,
               size_t errLen) {
    mv::PixelLocation loc;
    std::string why;
    if (!mv::locatePixelData(p, n, &loc, &why)) return refused(why, err, errLen);
    if (loc.deflated) {
        setError(err, errLen, "deflated dataset (1.2.840.10008.1.2.1.99): frames cannot be located without inflating it");
        return MV_DCM_ERR_UNSUPPORTED;
    }
    if (!loc.found) {
        setError(err, errLen, "no Pixel Data (7FE0,0010) at the top level of the dataset (or the bytes stop before it)");
        return MV_DCM_ERR_NO_PIXELS;
    }
    const uint64_t at = loc.elementOffset;
    const bool be = loc.bigEndian;
    uint64_t headerSize = 8;
    uint32_t len;
    if (at + 8 > n) return refused("truncated: the bytes stop inside the Pixel Data element header; refused", err, errLen);
    if (loc.explicitVR) {
        const char vr[3] = {char(p[at + 4]), char(p[at + 5]), 0};
        if (std::strcmp(vr, "OB") != 0 && std::strcmp(vr, "OW") != 0 && std::strcmp(vr, "UN") != 0) {
            setError(err, errLen, "Pixel Data (7FE0,0010) has a VR other than OB or OW (at offset " + num(at) + ")");
            return MV_DCM_ERR_PARSE;
        }
        headerSize = 12;
        if (at + 12 > n)
            return refused("truncated: the bytes stop inside the Pixel Data element header (at offset " + num(at) +
                               "); refused",
                           err, errLen);
        len = le32(p + at + 8, be);
    } else {
        len = le32(p + at + 4, be);
    }

    std::string ts = loc.transferSyntax;
    if (ts.empty()) ts = !loc.explicitVR ? kImplicitLE : be ? kExplicitBE : kExplicitLE;
    const bool encapsulated = len == MV_DCM_UNDEFINED_LENGTH;
    if (encapsulated && isNative(ts)) {
        setError(err, errLen, "Pixel Data has undefined length (encapsulated) in a native transfer syntax " + ts);
        return MV_DCM_ERR_PARSE;
    }
    if (!encapsulated && !isNative(ts)) {
        DcmXfer x(ts.c_str());
        if (x.getXfer() != EXS_Unknown && x.isEncapsulated()) {
            setError(err, errLen, "Pixel Data has a defined length (native) in the encapsulated transfer syntax " + ts);
            return MV_DCM_ERR_PARSE;
        }
    }

    // The header, read by DCMTK up to (not including) the Pixel Data element.
    auto fileFormat = std::make_unique<DcmFileFormat>();
    {
        DcmInputBufferStream stream;
        stream.setBuffer(p, offile_off_t(at));
        stream.setEos();
        fileFormat->transferInit();
        OFCondition status = fileFormat->read(stream, EXS_Unknown, EGL_noChange, keep ? kLoadAll : 4096);
        fileFormat->transferEnd();
        if (status.bad()) {
            setError(err, errLen, std::string("cannot read the header before Pixel Data: ") + status.text());
            return MV_DCM_ERR_PARSE;
        }
    }
    DcmDataset *ds = fileFormat->getDataset();
    if (ds == nullptr) return MV_DCM_ERR_INTERNAL;

    Uint16 rows = 0, cols = 0, spp = 0, ba = 0, bs = 0, hb = 0, pr = 0, pc = 0;
    auto need = [&](const DcmTagKey &key, Uint16 &v, const char *name) -> bool {
        if (ds->findAndGetUint16(key, v).good()) return true;
        setError(err, errLen, std::string("missing or invalid ") + name + " in the image header");
        return false;
    };
    if (!need(DCM_Rows, rows, "Rows (0028,0010)") || !need(DCM_Columns, cols, "Columns (0028,0011)") ||
        !need(DCM_BitsAllocated, ba, "Bits Allocated (0028,0100)"))
        return MV_DCM_ERR_PARSE;
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad()) spp = 1;
    if (ds->findAndGetUint16(DCM_BitsStored, bs).bad()) bs = ba;
    if (ds->findAndGetUint16(DCM_HighBit, hb).bad()) hb = Uint16(bs > 0 ? bs - 1 : 0);
    if (ds->findAndGetUint16(DCM_PixelRepresentation, pr).bad()) pr = 0;
    if (ds->findAndGetUint16(DCM_PlanarConfiguration, pc).bad()) pc = 0;
    OFString photometric;
    if (ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric).good()) {
        // A value is a code string (PS3.5 §6.2: at most 16 of A-Z, 0-9, space, underscore); it may hold
        // NULs, which would make it an empty C string further on (a fuzzer finding).
        photometric = OFString(photometric.c_str());
        while (!photometric.empty() && photometric[photometric.size() - 1] == ' ') photometric.erase(photometric.size() - 1);
        for (size_t i = 0; i < photometric.size(); ++i) {
            const char c = photometric[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ' ' || c == '_') || i >= 16) {
                setError(err, errLen, "Photometric Interpretation (0028,0004) is not a code string");
                return MV_DCM_ERR_PARSE;
            }
        }
    }
    if (photometric.empty()) {
        if (spp != 1) {
            setError(err, errLen, "missing Photometric Interpretation (0028,0004) for a colour image");
            return MV_DCM_ERR_PARSE;
        }
        photometric = "MONOCHROME2";
    }
    Sint32 frames = 1;
    if (ds->tagExistsWithValue(DCM_NumberOfFrames) && ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) {
        setError(err, errLen, "Number of Frames (0028,0008) is not a number");
        return MV_DCM_ERR_PARSE;
    }
    if (frames < 1) {
        setError(err, errLen, "Number of Frames (0028,0008) is not a positive number");
        return MV_DCM_ERR_PARSE;
    }
    if (rows == 0 || cols == 0) {
        setError(err, errLen, "Rows or Columns is 0");
        return MV_DCM_ERR_PARSE;
    }
    if (spp < 1 || spp > 4 || pr > 1 || pc > 1) {
        setError(err, errLen, "unsupported Samples per Pixel, Pixel Representation or Planar Configuration value");
        return MV_DCM_ERR_PARSE;
    }
    if (!(ba == 1 || ba == 8 || ba == 16 || ba == 32 || ba == 64) || bs < 1 || bs > ba || hb >= ba) {
        setError(err, errLen, "Bits Allocated / Bits Stored / High Bit are inconsistent (" + num(ba) + "/" + num(bs) +
                                  "/" + num(hb) + ")");
        return MV_DCM_ERR_PARSE;
    }
    const uint64_t bits = uint64_t(rows) * cols * spp * ba;  // < 2^41: no overflow
    if (bits % 8 != 0 && frames > 1) {
        setError(err, errLen, "1-bit frames that do not end on a byte boundary");
        return MV_DCM_ERR_UNSUPPORTED;
    }
    const uint64_t frameSize = (bits + 7) / 8;
    if (!encapsulated) {
        uint64_t total = 0;
        if (__builtin_mul_overflow(frameSize, uint64_t(frames), &total) || total > len) {
            setError(err, errLen, "native Pixel Data holds " + num(len) + " bytes, fewer than " + num(uint64_t(frames)) +
                                      " frame(s) of " + num(frameSize) + " bytes");
            return MV_DCM_ERR_PARSE;
        }
    }

    std::memset(out, 0, sizeof *out);
    out->value_offset = at + headerSize;
    out->value_length = len;
    out->encapsulated = encapsulated ? 1 : 0;
    out->big_endian = !encapsulated && be ? 1 : 0;
    std::snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s", ts.c_str());
    out->number_of_frames = uint32_t(frames);
    out->rows = rows;
    out->columns = cols;
    out->samples_per_pixel = spp;
    out->bits_allocated = ba;
    out->bits_stored = bs;
    out->high_bit = hb;
    out->pixel_representation = pr;
    out->planar_configuration = pc;
    std::snprintf(out->photometric, sizeof out->photometric, "%s", photometric.c_str());
    out->frame_size = frameSize;
    if (encapsulated && (loc.hasOffsets || loc.hasLengths)) {
        const uint64_t want = uint64_t(frames) * 8;
        if (!loc.hasOffsets || !loc.hasLengths || loc.offsetsLength != want || loc.lengthsLength != want) {
            setError(err, errLen, "the Extended Offset Table (7FE0,0001/0002) does not hold 8 bytes for each of the " +
                                      num(uint64_t(frames)) + " frame(s)");
            return MV_DCM_ERR_PARSE;
        }
        out->eot_offset = loc.offsetsAt;
        out->eot_length = loc.offsetsLength;
        out->eot_lengths_offset = loc.lengthsAt;
        out->eot_lengths_length = loc.lengthsLength;
    }
    if (keep != nullptr) *keep = std::move(fileFormat);
    return MV_DCM_OK;
}

bool validLayout(const mv_dcm_pixel_layout *l) {
    return l->rows > 0 && l->columns > 0 && l->samples_per_pixel >= 1 && l->samples_per_pixel <= 4 &&
           (l->bits_allocated == 1 || l->bits_allocated == 8 || l->bits_allocated == 16 || l->bits_allocated == 32 ||
            l->bits_allocated == 64) &&
           l->bits_stored >= 1 && l->bits_stored <= l->bits_allocated && l->high_bit < l->bits_allocated &&
           l->pixel_representation <= 1 && l->planar_configuration <= 1 &&
           l->frame_size == (uint64_t(l->rows) * l->columns * l->samples_per_pixel * l->bits_allocated + 7) / 8 &&
           std::memchr(l->transfer_syntax, 0, sizeof l->transfer_syntax) != nullptr &&
           std::memchr(l->photometric, 0, sizeof l->photometric) != nullptr;
}

// Decodes one frame into `out` (frame_size bytes, malloc'ed).
int decodeFrame(const mv_dcm_pixel_layout &l, const uint8_t *frame, size_t frameLen, size_t maxBytes, Malloced &out,
                std::string &photometric, uint16_t &planar, char *err, size_t errLen) {
    if (!validLayout(&l)) {
        setError(err, errLen, "inconsistent pixel description");
        return MV_DCM_ERR_PARSE;
    }
    const std::string ts = l.transfer_syntax;
    photometric = l.photometric;
    planar = l.planar_configuration;
    if (l.frame_size > maxBytes || l.frame_size > 0xFFFFFFF0u)
        return refused("a decoded frame of " + num(l.frame_size) + " bytes exceeds the limit of " + num(maxBytes) +
                           " bytes; refused",
                       err, errLen);
    const size_t size = size_t(l.frame_size);
    if (isNative(ts)) {
        if (l.encapsulated) {
            setError(err, errLen, "encapsulated pixel data in a native transfer syntax");
            return MV_DCM_ERR_PARSE;
        }
        if (frameLen < size) {
            setError(err, errLen, "the frame holds " + num(frameLen) + " bytes, fewer than " + num(size));
            return MV_DCM_ERR_PARSE;
        }
        out.p = std::malloc(size > 0 ? size : 1);
        if (out.p == nullptr) throw std::bad_alloc();
        out.n = size;
        std::memcpy(out.p, frame, size);
        const unsigned width = l.bits_allocated / 8;
        if (ts == kExplicitBE && width > 1) {
            auto *b = static_cast<uint8_t *>(out.p);
            for (size_t i = 0; i + width <= size; i += width)
                for (unsigned k = 0; k < width / 2; k++) std::swap(b[i + k], b[i + width - 1 - k]);
        }
        return MV_DCM_OK;
    }
    DcmXfer xfer(ts.c_str());
    if (!decodable(xfer.getXfer())) {
        setError(err, errLen, "transfer syntax " + syntaxName(ts) + " cannot be decoded here");
        return MV_DCM_ERR_UNSUPPORTED;
    }
    if (!l.encapsulated) {
        setError(err, errLen, "native pixel data in a compressed transfer syntax");
        return MV_DCM_ERR_PARSE;
    }
    if (frameLen == 0 || frameLen > 0xFFFFFFF0u) {
        setError(err, errLen, frameLen == 0 ? "the compressed frame is empty" : "the compressed frame is larger than 4 GiB");
        return MV_DCM_ERR_PARSE;
    }
    if (isJPEGProcess(xfer.getXfer()) && !jpegBitDepthScanEnds(frame, frameLen))
        return refused("the JPEG stream has a TEM marker (FF01) before its frame header; refused", err, errLen);
    if (xfer.getXfer() == EXS_RLELossless) {
        std::string why;
        if (!rleHeaderValid(l, frame, frameLen, &why)) {
            setError(err, errLen, "cannot decode the RLE frame: " + why);
            return MV_DCM_ERR_PARSE;
        }
    }
    registerCodecs();
    // A one-frame dataset around the compressed bytes: DCMTK's decoders read the image description from it.
    DcmDataset ds;
    ds.putAndInsertUint16(DCM_Rows, l.rows);
    ds.putAndInsertUint16(DCM_Columns, l.columns);
    ds.putAndInsertUint16(DCM_SamplesPerPixel, l.samples_per_pixel);
    ds.putAndInsertUint16(DCM_BitsAllocated, l.bits_allocated);
    ds.putAndInsertUint16(DCM_BitsStored, l.bits_stored);
    ds.putAndInsertUint16(DCM_HighBit, l.high_bit);
    ds.putAndInsertUint16(DCM_PixelRepresentation, l.pixel_representation);
    ds.putAndInsertOFStringArray(DCM_PhotometricInterpretation, l.photometric);
    if (l.samples_per_pixel > 1) ds.putAndInsertUint16(DCM_PlanarConfiguration, l.planar_configuration);
    ds.putAndInsertOFStringArray(DCM_NumberOfFrames, "1");
    DcmPixelSequence *sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
    DcmPixelItem *offsets = new DcmPixelItem(DCM_PixelItemTag);
    sequence->insert(offsets);
    DcmPixelItem *fragment = new DcmPixelItem(DCM_PixelItemTag);
    sequence->insert(fragment);
    if (fragment->putUint8Array(frame, Uint32(frameLen)).bad()) {
        delete sequence;
        throw std::bad_alloc();
    }
    DcmPixelData *pixelData = new DcmPixelData(DCM_PixelData);
    pixelData->putOriginalRepresentation(xfer.getXfer(), nullptr, sequence);
    if (ds.insert(pixelData).bad()) {
        delete pixelData;
        return MV_DCM_ERR_INTERNAL;
    }
    // getUncompressedFrame wants an even buffer size.
    const size_t bufSize = size + (size & 1);
    out.p = std::malloc(bufSize);
    if (out.p == nullptr) throw std::bad_alloc();
    out.n = size;
    Uint32 startFragment = 0;
    OFString colorModel;
    OFCondition status =
        pixelData->getUncompressedFrame(&ds, 0, startFragment, out.p, Uint32(bufSize), colorModel, nullptr);
    if (status.bad()) {
        setError(err, errLen, "cannot decode the " + std::string(xfer.getXferName()) + " frame: " + status.text());
        return MV_DCM_ERR_PARSE;
    }
    if (!colorModel.empty()) photometric = colorModel.c_str();
    Uint16 pc = planar;
    if (l.samples_per_pixel > 1 && ds.findAndGetUint16(DCM_PlanarConfiguration, pc).good()) planar = pc;
    return MV_DCM_OK;
}

struct MemFile {
    char *buffer = nullptr;
    size_t size = 0;
    FILE *f = nullptr;
    MemFile() { f = open_memstream(&buffer, &size); }
    ~MemFile() {
        if (f != nullptr) std::fclose(f);
        std::free(buffer);
    }
    bool close() {
        const bool ok = f != nullptr && std::fclose(f) == 0;
        f = nullptr;
        return ok;
    }
};

int render(const uint8_t *header, size_t headerLen, const uint8_t *frame, size_t frameLen, const mv_dcm_render_options &o,
           void **out, size_t *outLen, char *err, size_t errLen) {
    if (o.format != MV_DCM_RENDER_JPEG && o.format != MV_DCM_RENDER_PNG) {
        setError(err, errLen, "unknown output format");
        return MV_DCM_ERR_UNSUPPORTED;
    }
    if (o.format == MV_DCM_RENDER_JPEG && (o.quality < 1 || o.quality > 100)) {
        setError(err, errLen, "JPEG quality must be 1-100");
        return MV_DCM_ERR_PARSE;
    }
    if (o.has_window) {
        const bool finite = o.window_center == o.window_center && o.window_width == o.window_width &&
                            o.window_center > -1e12 && o.window_center < 1e12 && o.window_width < 1e12;
        const double minimum = o.window_function == MV_DCM_VOI_LINEAR ? 1.0 : 0.0;
        if (!finite || !(o.window_width >= minimum) || (o.window_function != MV_DCM_VOI_LINEAR && o.window_width <= 0) ||
            o.window_function < MV_DCM_VOI_LINEAR || o.window_function > MV_DCM_VOI_SIGMOID) {
            setError(err, errLen, "invalid window: the width must be at least 1 (LINEAR) or above 0 (LINEAR_EXACT, SIGMOID)");
            return MV_DCM_ERR_PARSE;
        }
    }
    if (o.viewport_width > kMaxViewport || o.viewport_height > kMaxViewport) {
        setError(err, errLen, "viewport larger than " + num(kMaxViewport) + " pixels a side");
        return MV_DCM_ERR_PARSE;
    }
    mv_dcm_pixel_layout l;
    std::unique_ptr<DcmFileFormat> fileFormat;
    int rc = readLayout(header, headerLen, &l, &fileFormat, err, errLen);
    if (rc != MV_DCM_OK) return rc;
    if (l.bits_allocated > 32) {
        setError(err, errLen, "64-bit pixels cannot be rendered");
        return MV_DCM_ERR_UNSUPPORTED;
    }
    Malloced pixels;
    std::string photometric;
    uint16_t planar = 0;
    rc = decodeFrame(l, frame, frameLen, o.max_frame_bytes, pixels, photometric, planar, err, errLen);
    if (rc != MV_DCM_OK) return rc;

    DcmDataset *ds = fileFormat->getDataset();
    // The header now describes this one native frame.
    ds->findAndDeleteElement(DcmTagKey(0x7FE0, 0x0001));
    ds->findAndDeleteElement(DcmTagKey(0x7FE0, 0x0002));
    ds->putAndInsertOFStringArray(DCM_NumberOfFrames, "1");
    ds->putAndInsertOFStringArray(DCM_PhotometricInterpretation, photometric.c_str());
    if (l.samples_per_pixel > 1) ds->putAndInsertUint16(DCM_PlanarConfiguration, planar);
    // Values the header may lack, as the layout assumed them.
    ds->putAndInsertUint16(DCM_SamplesPerPixel, l.samples_per_pixel);
    ds->putAndInsertUint16(DCM_BitsStored, l.bits_stored);
    ds->putAndInsertUint16(DCM_HighBit, l.high_bit);
    ds->putAndInsertUint16(DCM_PixelRepresentation, l.pixel_representation);
    {
        DcmPixelData *pixelData = new DcmPixelData(DCM_PixelData);
        OFCondition put;
        if (l.bits_allocated <= 8) {
            pixelData->setVR(EVR_OB);
            put = pixelData->putUint8Array(static_cast<const Uint8 *>(pixels.p), Uint32(pixels.n));
        } else {
            pixelData->setVR(EVR_OW);
            // Native little endian bytes are 16-bit words on this (little endian) machine.
            Uint16 *words = nullptr;
            put = pixelData->createUint16Array(Uint32(pixels.n / 2), words);
            if (put.good() && words != nullptr) std::memcpy(words, pixels.p, pixels.n & ~size_t(1));
        }
        if (put.bad() || ds->insert(pixelData, OFTrue).bad()) {
            delete pixelData;
            setError(err, errLen, "cannot build the one-frame image");
            return MV_DCM_ERR_INTERNAL;
        }
    }
    std::free(pixels.release());

    DicomImage image(ds, EXS_LittleEndianExplicit, CIF_MayDetachPixelData);
    if (image.getStatus() != EIS_Normal) {
        const EI_Status s = image.getStatus();
        setError(err, errLen, std::string("cannot render: ") + DicomImage::getString(s));
        return s == EIS_NotSupportedValue ? MV_DCM_ERR_UNSUPPORTED : MV_DCM_ERR_PARSE;
    }
    if (image.isMonochrome()) {
        int ok = 1;
        if (o.has_window) {
            const bool exact = o.window_function == MV_DCM_VOI_LINEAR_EXACT;
            // LINEAR_EXACT (PS3.3 C.11.2.1.3.2) with (c, w) is LINEAR with (c + 0.5, w + 1).
            ok = image.setWindow(exact ? o.window_center + 0.5 : o.window_center,
                                 exact ? o.window_width + 1 : o.window_width);
            if (ok) ok = image.setVoiLutFunction(o.window_function == MV_DCM_VOI_SIGMOID ? EFV_Sigmoid : EFV_Linear);
        } else if (image.getWindowCount() > 0) {
            ok = image.setWindow(0);
        } else if (image.getVoiLutCount() > 0) {
            ok = image.setVoiLut(0);
        } else {
            ok = image.setMinMaxWindow(0);
        }
        if (!ok) {
            setError(err, errLen, "cannot apply the window");
            return MV_DCM_ERR_PARSE;
        }
    }
    DicomImage *target = &image;
    std::unique_ptr<DicomImage> scaled;
    if (o.viewport_width > 0 || o.viewport_height > 0) {
        const double w = double(image.getWidth()), h = double(image.getHeight());
        double s = 1e300;
        if (o.viewport_width > 0) s = std::min(s, o.viewport_width / w);
        if (o.viewport_height > 0) s = std::min(s, o.viewport_height / h);
        unsigned long tw = std::max<unsigned long>(1, (unsigned long)(w * s + 0.5));
        unsigned long th = std::max<unsigned long>(1, (unsigned long)(h * s + 0.5));
        if (o.viewport_width > 0) tw = std::min<unsigned long>(tw, o.viewport_width);
        if (o.viewport_height > 0) th = std::min<unsigned long>(th, o.viewport_height);
        if (uint64_t(tw) * th * 4 > o.max_frame_bytes)
            return refused("a " + num(tw) + " x " + num(th) + " viewport exceeds the frame limit; refused", err, errLen);
        if (tw != image.getWidth() || th != image.getHeight()) {
            scaled.reset(image.createScaledImage(tw, th, 1, 0));  // pbmplus: no overshoot at the edges
            if (!scaled || scaled->getStatus() != EIS_Normal) {
                setError(err, errLen, "cannot scale the image to the viewport");
                return MV_DCM_ERR_INTERNAL;
            }
            target = scaled.get();
        }
    }
    MemFile file;
    if (file.f == nullptr) throw std::bad_alloc();
    int written = 0;
    if (o.format == MV_DCM_RENDER_JPEG) {
        DiJPEGPlugin plugin;
        plugin.setQuality(unsigned(o.quality));
        plugin.setSampling(ESS_444);
        written = target->writePluginFormat(&plugin, file.f, 0);
    } else {
        DiPNGPlugin plugin;
        plugin.setInterlaceType(E_pngInterlaceNone);
        plugin.setMetainfoType(E_pngNoMetainfo);
        written = target->writePluginFormat(&plugin, file.f, 0);
    }
    if (!file.close() || !written || file.size == 0) {
        setError(err, errLen, o.format == MV_DCM_RENDER_JPEG ? "the JPEG encoder failed" : "the PNG encoder failed");
        return MV_DCM_ERR_INTERNAL;
    }
    *out = file.buffer;
    *outLen = file.size;
    file.buffer = nullptr;
    return MV_DCM_OK;
}

}  // namespace

extern "C" int mv_dcm_pixel_layout_read(const void *bytes, size_t length, mv_dcm_pixel_layout *out, char *err,
                                        size_t err_len) {
    return guarded("reading the pixel layout", err, err_len, [&]() -> int {
        if (out == nullptr || (bytes == nullptr && length > 0)) return MV_DCM_ERR_INTERNAL;
        std::memset(out, 0, sizeof *out);
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        if (length == 0) {
            setError(err, err_len, "not a DICOM file: empty");
            return MV_DCM_ERR_PARSE;
        }
        return withKnownStack(
            [&]() -> int {
                return guarded("reading the pixel layout", err, err_len, [&]() -> int {
                    return readLayout(static_cast<const uint8_t *>(bytes), length, out, nullptr, err, err_len);
                });
            },
            err, err_len);
    });
}

extern "C" int mv_dcm_can_decode(const char *transfer_syntax) {
    try {
        if (transfer_syntax == nullptr) return 0;
        const std::string ts = transfer_syntax;
        if (isNative(ts)) return 1;
        return decodable(DcmXfer(transfer_syntax).getXfer()) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int mv_dcm_decode_frame(const mv_dcm_pixel_layout *layout, const void *frame, size_t frame_len,
                                   size_t max_frame_bytes, void **out, size_t *out_len, char *photometric,
                                   uint16_t *planar, char *err, size_t err_len) {
    return guarded("decoding a frame", err, err_len, [&]() -> int {
        if (layout == nullptr || out == nullptr || out_len == nullptr || photometric == nullptr || planar == nullptr ||
            (frame == nullptr && frame_len > 0))
            return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        *out_len = 0;
        photometric[0] = '\0';
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        Malloced decoded;
        std::string model;
        uint16_t pc = 0;
        rc = decodeFrame(*layout, static_cast<const uint8_t *>(frame), frame_len, max_frame_bytes, decoded, model, pc, err,
                         err_len);
        if (rc != MV_DCM_OK) return rc;
        std::snprintf(photometric, 20, "%s", model.c_str());
        *planar = pc;
        *out_len = decoded.n;
        *out = decoded.release();
        return MV_DCM_OK;
    });
}

extern "C" int mv_dcm_render(const void *header, size_t header_len, const void *frame, size_t frame_len,
                             const mv_dcm_render_options *options, void **out, size_t *out_len, char *err,
                             size_t err_len) {
    return guarded("rendering a frame", err, err_len, [&]() -> int {
        if (options == nullptr || out == nullptr || out_len == nullptr || (header == nullptr && header_len > 0) ||
            (frame == nullptr && frame_len > 0))
            return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        *out_len = 0;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        if (header_len == 0) {
            setError(err, err_len, "not a DICOM file: empty");
            return MV_DCM_ERR_PARSE;
        }
        return withKnownStack(
            [&]() -> int {
                return guarded("rendering a frame", err, err_len, [&]() -> int {
                    return render(static_cast<const uint8_t *>(header), header_len,
                                  static_cast<const uint8_t *>(frame), frame_len, *options, out, out_len, err, err_len);
                });
            },
            err, err_len);
    });
}

extern "C" void mv_dcm_free(void *p) { std::free(p); }
