// mv_dcmtk.cpp — see include/mv_dcmtk.h for why this exists. Every entry point catches everything.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/dcmdata/dcjson.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "mv_bulkdata.h"
#include "mv_dcmtk.h"
#include "mv_iso2022.h"
#include "mv_prescan.h"
#include "mv_shim.h"

struct mv_dcm_header {
    std::map<uint32_t, std::string> values;
    std::string transferSyntax;
    bool hasFileMeta = false;
    bool charsetConverted = true;
};

using mv::guarded;
using mv::refused;
using mv::setError;
using mv::withKnownStack;

namespace {

// Values longer than this are walked over, never read into memory.
const Uint32 kMaxReadLength = 4096;
// Top-level values longer than this are not kept in the header (they are never identifiers).
const unsigned long kMaxKeptValue = 1024;

std::once_flag gInitOnce;
bool gDictionaryLoaded = false;

void initializeOnce() {
    std::call_once(gInitOnce, [] {
        // DCMTK logs malformed-input details (including element values) to stderr. Silence it;
        // callers get the OFCondition text instead.
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
        gDictionaryLoaded = dcmDataDict.isDictionaryLoaded();
    });
}

// Copies every short top-level element (not sequences, not pixel data) into the header.
// Iterates the element list: getElement(i) walks the list from its head on every call (quadratic).
void collectValues(DcmDataset *dataset, mv_dcm_header *header) {
    header->values.clear();
    for (DcmObject *object = dataset->nextInContainer(nullptr); object != nullptr;
         object = dataset->nextInContainer(object)) {
        DcmElement *element = dynamic_cast<DcmElement *>(object);
        if (element == nullptr) continue;
        const DcmTag &tag = element->getTag();
        const DcmEVR evr = tag.getEVR();
        if (evr == EVR_SQ || evr == EVR_pixelSQ || evr == EVR_OB || evr == EVR_OW || evr == EVR_OF ||
            evr == EVR_OD || evr == EVR_OL || evr == EVR_OV || evr == EVR_UN || evr == EVR_ox ||
            evr == EVR_px)
            continue;
        if (element->getLength() > kMaxKeptValue) continue;
        OFString value;
        if (element->getOFStringArray(value).good()) {
            const uint32_t key = (uint32_t(tag.getGroup()) << 16) | tag.getElement();
            header->values[key] = std::string(value.c_str(), value.length());
        }
    }
}

int finishParse(DcmFileFormat &fileFormat, OFCondition status, mv_dcm_header **out, char *err, size_t errLen) {
    if (status.bad()) {
        setError(err, errLen, std::string("not a readable DICOM file: ") + status.text());
        return MV_DCM_ERR_PARSE;
    }
    DcmDataset *dataset = fileFormat.getDataset();
    if (dataset == nullptr || dataset->card() == 0) {
        setError(err, errLen, "not a DICOM file: no data elements");
        return MV_DCM_ERR_PARSE;
    }
    mv_dcm_header *header = new (std::nothrow) mv_dcm_header();
    if (header == nullptr) {
        setError(err, errLen, "out of memory");
        return MV_DCM_ERR_INTERNAL;
    }
    DcmMetaInfo *meta = fileFormat.getMetaInfo();
    header->hasFileMeta = meta != nullptr && meta->card() > 0;
    OFString xfer;
    if (header->hasFileMeta && meta->findAndGetOFString(DCM_TransferSyntaxUID, xfer).good() && !xfer.empty()) {
        header->transferSyntax = xfer.c_str();
    } else {
        header->transferSyntax = DcmXfer(dataset->getOriginalXfer()).getXferID();
    }
    // Raw values first, so that a character set this machine cannot convert still leaves the
    // (sealed) raw values and a flag, rather than a failed import.
    collectValues(dataset, header);
    OFString charset;
    if (dataset->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good() && !charset.empty()) {
        // ISO 2022 IR 87/159/13: glibc lacks the iconv names DCMTK asks for; the shim decodes them (mv_iso2022.cpp).
        const bool converted = mv::iso2022FallbackFirst(dataset) ? mv::convertISO2022ToUTF8(dataset)
                                                                 : dataset->convertToUTF8().good();
        if (converted) {
            collectValues(dataset, header);
        } else {
            header->charsetConverted = false;
        }
    }
    *out = header;
    return MV_DCM_OK;
}

// DCMTK's parse of a buffer (whole, or up to the top-level Pixel Data), on a stack with known
// headroom, into a header. The caller has run the pre-scan.
int parseBuffer(const void *bytes, size_t length, bool untilPixels, mv_dcm_header **out, char *err, size_t err_len) {
    return withKnownStack(
        [&]() -> int {
            return guarded("parsing", err, err_len, [&]() -> int {
                DcmInputBufferStream stream;
                stream.setBuffer(bytes, offile_off_t(length));
                stream.setEos();
                DcmFileFormat fileFormat;
                fileFormat.transferInit();
                OFCondition status =
                    untilPixels ? fileFormat.readUntilTag(stream, EXS_Unknown, EGL_noChange, kMaxReadLength, DCM_PixelData)
                                : fileFormat.read(stream, EXS_Unknown, EGL_noChange, kMaxReadLength);
                fileFormat.transferEnd();
                return finishParse(fileFormat, status, out, err, err_len);
            });
        },
        err, err_len);
}

}  // namespace

extern "C" int mv_dcm_initialize(char *err, size_t err_len) {
    try {
        initializeOnce();
        if (!gDictionaryLoaded) {
            setError(err, err_len,
                     "DCMTK data dictionary is not loaded (install the libdcmtk17 package, which provides "
                     "/usr/share/libdcmtk17/dicom.dic)");
            return MV_DCM_ERR_DICTIONARY;
        }
        return MV_DCM_OK;
    } catch (...) {
        setError(err, err_len, "unexpected C++ exception while initialising DCMTK");
        return MV_DCM_ERR_INTERNAL;
    }
}

extern "C" int mv_dcm_parse_file(const char *path, mv_dcm_header **out, char *err, size_t err_len) {
    return guarded("parsing", err, err_len, [&]() -> int {
        if (out == nullptr || path == nullptr) return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            setError(err, err_len, std::string("cannot open file: ") + std::strerror(errno));
            return MV_DCM_ERR_IO;
        }
        struct FdCloser {
            int fd;
            ~FdCloser() { ::close(fd); }
        } closer{fd};
        std::string why;
        if (!mv::prescanFd(fd, mv::ScanExtent::whole, &why)) return refused(why, err, err_len);
        // DCMTK reads what was scanned: the same open file, not the path again.
        char fdPath[64];
        std::snprintf(fdPath, sizeof fdPath, "/proc/self/fd/%d", fd);
        return withKnownStack(
            [&]() -> int {
                return guarded("parsing", err, err_len, [&]() -> int {
                    DcmFileFormat fileFormat;
                    OFCondition status = fileFormat.loadFile(OFFilename(fdPath), EXS_Unknown, EGL_noChange,
                                                             kMaxReadLength, ERM_autoDetect);
                    return finishParse(fileFormat, status, out, err, err_len);
                });
            },
            err, err_len);
    });
}

extern "C" int mv_dcm_parse_buffer(const void *bytes, size_t length, mv_dcm_header **out, char *err,
                                   size_t err_len) {
    return guarded("parsing", err, err_len, [&]() -> int {
        if (out == nullptr || (bytes == nullptr && length > 0)) return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        if (length == 0) {
            setError(err, err_len, "not a DICOM file: empty");
            return MV_DCM_ERR_PARSE;
        }
        std::string why;
        if (!mv::prescanBuffer(static_cast<const uint8_t *>(bytes), length, mv::ScanExtent::whole, &why))
            return refused(why, err, err_len);
        return parseBuffer(bytes, length, false, out, err, err_len);
    });
}

extern "C" int mv_dcm_prescan_stream(mv_dcm_read_fn read, void *context, uint64_t size, char *err, size_t err_len) {
    return guarded("scanning", err, err_len, [&]() -> int {
        if (read == nullptr) return MV_DCM_ERR_INTERNAL;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        if (size == 0) {
            setError(err, err_len, "not a DICOM file: empty");
            return MV_DCM_ERR_PARSE;
        }
        std::string why;
        if (!mv::prescanStream(read, context, size, &why)) return refused(why, err, err_len);
        return MV_DCM_OK;
    });
}

extern "C" int mv_dcm_parse_until_pixels(const void *bytes, size_t length, mv_dcm_header **out, char *err,
                                         size_t err_len) {
    return guarded("parsing", err, err_len, [&]() -> int {
        if (out == nullptr || (bytes == nullptr && length > 0)) return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        // The caller scanned the whole file already: a scan that fails here ran into the end of the
        // bytes, before the Pixel Data tag.
        mv::PixelLocation location;
        std::string why;
        const bool scanned = mv::locatePixelData(static_cast<const uint8_t *>(bytes), length, &location, &why);
        if (!scanned || !location.found) {
            setError(err, err_len, "the bytes end before the top-level Pixel Data (7FE0,0010)");
            return MV_DCM_ERR_NO_PIXELS;
        }
        if (location.deflated) {
            setError(err, err_len, "a deflated dataset must be parsed whole");
            return MV_DCM_ERR_UNSUPPORTED;
        }
        return parseBuffer(bytes, length, true, out, err, err_len);
    });
}

extern "C" const char *mv_dcm_header_get(const mv_dcm_header *header, uint16_t group, uint16_t element) {
    if (header == nullptr) return nullptr;
    auto it = header->values.find((uint32_t(group) << 16) | element);
    return it == header->values.end() ? nullptr : it->second.c_str();
}

extern "C" int mv_dcm_header_has_file_meta(const mv_dcm_header *header) {
    return header != nullptr && header->hasFileMeta ? 1 : 0;
}

extern "C" int mv_dcm_header_charset_converted(const mv_dcm_header *header) {
    return header != nullptr && header->charsetConverted ? 1 : 0;
}

extern "C" const char *mv_dcm_header_transfer_syntax(const mv_dcm_header *header) {
    return header == nullptr ? "" : header->transferSyntax.c_str();
}

extern "C" void mv_dcm_header_free(mv_dcm_header *header) { delete header; }

namespace {

int jsonFromBuffer(const void *bytes, size_t length, const mv_dcm_json_options *options, char **json, size_t *json_len,
                   char *err, size_t err_len) {
    DcmInputBufferStream stream;
    stream.setBuffer(bytes, offile_off_t(length));
    stream.setEos();
    DcmFileFormat fileFormat;
    fileFormat.transferInit();
    OFCondition status = fileFormat.readUntilTag(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, DCM_PixelData);
    fileFormat.transferEnd();
    DcmDataset *dataset = fileFormat.getDataset();
    if (status.bad() || dataset == nullptr || dataset->card() == 0) {
        setError(err, err_len, std::string("cannot read the dataset: ") + status.text());
        return MV_DCM_ERR_PARSE;
    }
    dataset->findAndDeleteElement(DCM_PixelData);
    // Values stay as read if neither DCMTK nor the ISO 2022 fallback (mv_iso2022.cpp) can convert them.
    if (mv::iso2022FallbackFirst(dataset)) {
        (void)mv::convertISO2022ToUTF8(dataset);
    } else {
        (void)dataset->convertToUTF8();
    }
    std::ostringstream out;
    // DcmDataset::writeJson writes the members; the enclosing object is the caller's (as in DcmFileFormat).
    out << "{";
    OFCondition written = mv::writeDatasetJson(*dataset, options, out);  // mv_bulkdata.cpp
    out << "}";
    if (written.bad()) {
        setError(err, err_len, std::string("cannot write DICOM JSON: ") + written.text());
        return MV_DCM_ERR_PARSE;
    }
    const std::string text = out.str();
    char *copy = static_cast<char *>(std::malloc(text.size() + 1));
    if (copy == nullptr) {
        setError(err, err_len, "out of memory");
        return MV_DCM_ERR_INTERNAL;
    }
    std::memcpy(copy, text.c_str(), text.size() + 1);
    *json = copy;
    *json_len = text.size();
    return MV_DCM_OK;
}

}  // namespace

extern "C" int mv_dcm_json_from_buffer(const void *bytes, size_t length, char **json, size_t *json_len, char *err,
                                       size_t err_len) {
    return mv_dcm_json_from_buffer_with(bytes, length, nullptr, json, json_len, err, err_len);
}

extern "C" int mv_dcm_json_from_buffer_with(const void *bytes, size_t length, const mv_dcm_json_options *options,
                                            char **json, size_t *json_len, char *err, size_t err_len) {
    try {
        if (json == nullptr || json_len == nullptr || (bytes == nullptr && length > 0)) return MV_DCM_ERR_INTERNAL;
        *json = nullptr;
        *json_len = 0;
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        // DCMTK stops at the top-level Pixel Data tag here (the buffer may be cut off inside it): so does the scan.
        std::string why;
        if (!mv::prescanBuffer(static_cast<const uint8_t *>(bytes), length, mv::ScanExtent::untilPixels, &why))
            return refused(why, err, err_len);
        return withKnownStack(
            [&]() -> int {
                try {
                    return jsonFromBuffer(bytes, length, options, json, json_len, err, err_len);
                } catch (...) {
                    setError(err, err_len, "unexpected C++ exception while writing DICOM JSON");
                    return MV_DCM_ERR_INTERNAL;
                }
            },
            err, err_len);
    } catch (...) {
        setError(err, err_len, "unexpected C++ exception while writing DICOM JSON");
        return MV_DCM_ERR_INTERNAL;
    }
}

extern "C" void mv_dcm_free_string(char *s) { std::free(s); }
