// mv_iso2022.h — private to the shim: decoding of the ISO 2022 code extensions that DCMTK 3.6.7 with
// glibc's iconv cannot convert (PS3.5 §6.1.2.5, Annexes H and I). Used instead of convertToUTF8 when (0008,0005) names IR 13, 87 or 159.
//   decodeISO2022         one value's raw bytes to UTF-8 (pure; bad bytes become U+FFFD)
//   convertISO2022ToUTF8  every affected text value of a dataset, then (0008,0005) = "ISO_IR 192"
#ifndef MV_ISO2022_H
#define MV_ISO2022_H

#include <cstddef>
#include <string>
#include <vector>

class DcmItem;

namespace mv {

// What the Specific Character Set (0008,0005) allows, and the state every value starts in.
struct ISO2022Terms {
    bool firstIsIR13 = false;  // value 1 is "ISO 2022 IR 13": G0 JIS X 0201 Romaji, G1 JIS X 0201 katakana
    bool hasIR149 = false;     // "ISO 2022 IR 149" present (KS X 1001 in G1)
    bool hasExtension = false; // IR 13, 87, 159 or 149 present: the only case the fallback is for
    bool hasJIS = false;       // IR 13, 87 or 159 present: DCMTK with glibc's iconv cannot convert these
};

// Parses the values of (0008,0005). False when a term is not one of "", "ISO 2022 IR 6", "ISO 2022 IR 13",
// "ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149" (the fallback then does nothing).
bool parseISO2022Terms(const std::vector<std::string> &values, ISO2022Terms &terms);

// Decodes one value. `personName`: '^' and '=' reset to the initial state as well as '\' and control
// characters. Appends at most 3 bytes of UTF-8 per input byte. Returns false if a byte or escape
// sequence could not be decoded (it is replaced by U+FFFD; the rest is decoded).
bool decodeISO2022(const char *bytes, size_t length, const ISO2022Terms &terms, bool personName, std::string &out);

// The fallback: when (0008,0005) of `dataset` names only the terms above and at least one besides
// IR 6, decodes every PN, LO, SH, ST, LT, UT and UC value of the dataset and its items (items with their
// own (0008,0005) must also qualify), then sets (0008,0005) to "ISO_IR 192". Nothing is changed unless
// every value could be read. Returns true if the dataset is now UTF-8. Never throws.
bool convertISO2022ToUTF8(DcmItem *dataset);

// Whether the top-level (0008,0005) of `dataset` qualifies for the fallback and names a JIS set that
// DCMTK cannot convert here. The callers then use the fallback *instead of* convertToUTF8: a
// convertToUTF8 that fails half-way (in a nested item) may leave values already in UTF-8, which the
// fallback would decode a second time.
bool iso2022FallbackFirst(DcmItem *dataset);

}  // namespace mv

#endif
