// mv_bulkdata.cpp — binary values besides Pixel Data for DICOMweb (docs/api.md, "Bulk data"): the
// JSON writer that gives large ones a BulkDataURI (mv::writeDatasetJson), and the value a BulkDataURI
// names (mv_dcm_bulk_value). See include/mv_dcmtk.h for the path scheme. Every entry point catches
// everything; messages name tags, item indices and limits, never a value.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcjson.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "mv_bulkdata.h"
#include "mv_dcmtk.h"
#include "mv_prescan.h"
#include "mv_shim.h"

using mv::guarded;
using mv::refused;
using mv::setError;
using mv::withKnownStack;

namespace {

// OB, OD, OF, OL, OV, OW, UN: what DCMTK's JSON writer would give as InlineBinary. getValidEVR maps
// DCMTK's internal VRs (ox, px, an implicit private tag's unknown VR) to the one the JSON names.
bool isBinary(const DcmObject &object) {
    switch (DcmVR(object.getTag().getEVR()).getValidEVR()) {
    case EVR_OB: case EVR_OD: case EVR_OF: case EVR_OL: case EVR_OV: case EVR_OW: case EVR_UN: return true;
    default: return false;
    }
}

std::string tagText(uint32_t tag) {
    char text[9];
    std::snprintf(text, sizeof text, "%08X", unsigned(tag));
    return text;
}

uint32_t tagNumber(const DcmObject &object) {
    return uint32_t(object.getTag().getGroup()) << 16 | object.getTag().getElement();
}

// DCMTK's JSON writer asks `asBulkDataURI` with the element's own tag: DcmObject::getTag() returns a
// reference to its member. That address names one element, where a tag alone is ambiguous (the same
// tag in every item of a sequence), so the URIs are keyed by it, found by one walk before writing.
class BulkDataJsonFormat : public DcmJsonFormatCompact {
public:
    BulkDataJsonFormat(DcmItem &dataset, size_t threshold, const std::string &prefix)
        : DcmJsonFormatCompact(OFFalse), threshold_(threshold), prefix_(prefix) {
        collect(dataset, "");
    }

    OFBool asBulkDataURI(const DcmTagKey &tag, OFString &uri) override {
        const auto found = uris_.find(&tag);
        if (found == uris_.end()) return OFFalse;
        uri = OFString(found->second.c_str(), found->second.size());
        return OFTrue;
    }

private:
    // Depth is bounded by the pre-scan (64 levels), like DCMTK's own recursion.
    void collect(DcmItem &item, const std::string &path) {
        for (DcmObject *object = item.nextInContainer(nullptr); object != nullptr; object = item.nextInContainer(object)) {
            const std::string here = path + tagText(tagNumber(*object));
            if (auto *sequence = dynamic_cast<DcmSequenceOfItems *>(object)) {
                unsigned long index = 0;
                for (DcmObject *child = sequence->nextInContainer(nullptr); child != nullptr;
                     child = sequence->nextInContainer(child), ++index) {
                    if (auto *nested = dynamic_cast<DcmItem *>(child)) collect(*nested, here + "/" + std::to_string(index) + "/");
                }
            } else if (isBinary(*object) && object->getLengthField() != DCM_UndefinedLength &&
                       object->getLengthField() > threshold_) {
                uris_[&object->getTag()] = prefix_ + here;
            }
        }
    }

    size_t threshold_;
    std::string prefix_;
    std::map<const DcmTagKey *, std::string> uris_;
};

// The element at `path` (include/mv_dcmtk.h), or null with the reason.
DcmElement *elementAt(DcmItem *item, const uint32_t *path, size_t count, std::string *why) {
    for (size_t i = 0; item != nullptr; i += 2) {
        const DcmTagKey key(uint16_t(path[i] >> 16), uint16_t(path[i] & 0xFFFF));
        DcmElement *element = nullptr;
        if (item->findAndGetElement(key, element, OFFalse).bad() || element == nullptr) {
            *why = "no element " + tagText(path[i]) + (i == 0 ? " in the dataset" : " in that item");
            return nullptr;
        }
        if (i + 1 == count) return element;
        auto *sequence = dynamic_cast<DcmSequenceOfItems *>(element);
        if (sequence == nullptr) {
            *why = "element " + tagText(path[i]) + " is not a sequence";
            return nullptr;
        }
        if (path[i + 1] >= sequence->card()) {
            *why = "sequence " + tagText(path[i]) + " has " + std::to_string(sequence->card()) + " item(s), numbered from 0";
            return nullptr;
        }
        item = sequence->getItem(path[i + 1]);
    }
    *why = "no such item";
    return nullptr;
}

// The value's bytes, little endian, into a malloc'ed buffer.
int copyValue(DcmElement &element, size_t maxBytes, void **out, size_t *outLen, char *vr, char *err, size_t errLen) {
    const Uint32 length = element.getLengthField();
    if (length > maxBytes) {
        setError(err, errLen, "the value is " + std::to_string(length) + " bytes, more than the limit of " + std::to_string(maxBytes));
        return MV_DCM_ERR_REFUSED;
    }
    void *copy = std::malloc(length > 0 ? length : 1);
    if (copy == nullptr) {
        setError(err, errLen, "out of memory");
        return MV_DCM_ERR_INTERNAL;
    }
    if (length > 0) {
        // Swaps each word by the VR's width from the order the value is held in (EBO_BigEndian for an
        // Explicit VR Big Endian file) to little endian.
        const OFCondition status = element.getPartialValue(copy, 0, length, nullptr, EBO_LittleEndian);
        if (status.bad()) {
            std::memset(copy, 0, length);
            std::free(copy);
            setError(err, errLen, std::string("cannot read the value: ") + status.text());
            return MV_DCM_ERR_PARSE;
        }
    }
    const char *name = DcmVR(DcmVR(element.getTag().getEVR()).getValidEVR()).getVRName();
    std::snprintf(vr, 3, "%s", name);
    *out = copy;
    *outLen = length;
    return MV_DCM_OK;
}

int bulkValue(const void *bytes, size_t length, const uint32_t *path, size_t count, size_t maxBytes, void **out,
              size_t *outLen, char *vr, char *err, size_t errLen) {
    DcmInputBufferStream stream;
    stream.setBuffer(bytes, offile_off_t(length));
    stream.setEos();
    DcmFileFormat fileFormat;
    fileFormat.transferInit();
    const OFCondition status = fileFormat.readUntilTag(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, DCM_PixelData);
    fileFormat.transferEnd();
    DcmDataset *dataset = fileFormat.getDataset();
    if (status.bad() || dataset == nullptr || dataset->card() == 0) {
        setError(err, errLen, std::string("cannot read the dataset: ") + status.text());
        return MV_DCM_ERR_PARSE;
    }
    // The top-level Pixel Data is served from the stream, not from here.
    dataset->findAndDeleteElement(DCM_PixelData);
    std::string why;
    DcmElement *element = elementAt(dataset, path, count, &why);
    if (element == nullptr) {
        setError(err, errLen, why);
        return MV_DCM_ERR_NOT_FOUND;
    }
    if (!isBinary(*element) || element->getLengthField() == DCM_UndefinedLength) {
        setError(err, errLen, "element " + tagText(path[count - 1]) +
                                  (isBinary(*element) ? " is encapsulated" : " is not a binary value (OB, OD, OF, OL, OV, OW or UN)"));
        return MV_DCM_ERR_NOT_FOUND;
    }
    return copyValue(*element, maxBytes, out, outLen, vr, err, errLen);
}

}  // namespace

OFCondition mv::writeDatasetJson(DcmDataset &dataset, const mv_dcm_json_options *options, std::ostream &out) {
    if (options == nullptr || options->bulk_threshold == 0 || options->bulk_uri_prefix == nullptr) {
        DcmJsonFormatCompact format(OFFalse);
        return dataset.writeJson(out, format);
    }
    BulkDataJsonFormat format(dataset, options->bulk_threshold, options->bulk_uri_prefix);
    return dataset.writeJson(out, format);
}

extern "C" int mv_dcm_bulk_value(const void *bytes, size_t length, const uint32_t *path, size_t path_count,
                                 size_t max_bytes, void **out, size_t *out_len, char *vr, char *err, size_t err_len) {
    return guarded("reading a bulk data value", err, err_len, [&]() -> int {
        if (out == nullptr || out_len == nullptr || vr == nullptr || path == nullptr || (bytes == nullptr && length > 0))
            return MV_DCM_ERR_INTERNAL;
        *out = nullptr;
        *out_len = 0;
        vr[0] = '\0';
        if (path_count == 0 || path_count % 2 == 0 || path_count > MV_DCM_MAX_BULK_PATH) {
            setError(err, err_len, "a bulk data path is a tag, then item index and tag pairs, at most 64 sequences deep");
            return MV_DCM_ERR_NOT_FOUND;
        }
        int rc = mv_dcm_initialize(err, err_len);
        if (rc != MV_DCM_OK) return rc;
        // DCMTK stops at the top-level Pixel Data tag here: so does the scan.
        std::string why;
        if (!mv::prescanBuffer(static_cast<const uint8_t *>(bytes), length, mv::ScanExtent::untilPixels, &why))
            return refused(why, err, err_len);
        return withKnownStack(
            [&]() -> int {
                return guarded("reading a bulk data value", err, err_len, [&]() -> int {
                    return bulkValue(bytes, length, path, path_count, max_bytes, out, out_len, vr, err, err_len);
                });
            },
            err, err_len);
    });
}
