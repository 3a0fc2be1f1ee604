// mv_iso2022.cpp — see mv_iso2022.h. DCMTK 3.6.7 converts ISO 2022 values with one iconv converter per
// term ("ISO-IR-87", "JIS_X0201", ...), names glibc does not have. Here the escape sequences are
// followed by hand (PS3.5 §6.1.2.5.3, Annex H for Japanese, Annex I for Korean) and each run of
// multi-byte characters is converted by glibc's own EUC-JP / EUC-KR (JIS X 0208 and KS X 1001 with the
// high bit set, JIS X 0212 behind the SS3 byte 0x8F); JIS X 0201 katakana maps to U+FF61–U+FF9F.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mv_iso2022.h"

namespace mv {

namespace {

enum class G0 { ascii, roman, jis0208, jis0212 };
enum class G1 { none, katakana, ksx1001 };
enum class Run { none, eucJP, eucKR };

// Items nest no deeper than the pre-scan allows; this is a second bound for the walk below.
const int kMaxDepth = 256;

// One converter per thread and encoding, opened on first use (an iconv_t is not shareable across
// threads) and closed when the thread ends: withKnownStack's helper threads are short-lived.
struct Converters {
    iconv_t jp = iconv_t(-1), kr = iconv_t(-1);
    bool jpTried = false, krTried = false;
    ~Converters() {
        if (jp != iconv_t(-1)) iconv_close(jp);
        if (kr != iconv_t(-1)) iconv_close(kr);
    }
};

iconv_t converter(Run run) {
    thread_local Converters converters;
    Converters &c = converters;
    if (run == Run::eucJP) {
        if (!c.jpTried) { c.jpTried = true; c.jp = iconv_open("UTF-8", "EUC-JP"); }
        return c.jp;
    }
    if (!c.krTried) { c.krTried = true; c.kr = iconv_open("UTF-8", "EUC-KR"); }
    return c.kr;
}

void appendReplacement(std::string &out) { out += "\xEF\xBF\xBD"; }  // U+FFFD

void appendUTF8(std::string &out, uint32_t cp) {  // cp < 0x10000 here
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Bytes of one character of the pending run (which this file built, so it is well formed).
size_t charLength(Run run, unsigned char lead) {
    if (lead < 0x80) return 1;
    if (run == Run::eucJP && lead == 0x8F) return 3;
    return 2;
}

// Converts the pending run and appends it; a character iconv refuses becomes U+FFFD. False if any did.
bool flush(std::string &pending, Run &run, std::string &out) {
    if (pending.empty()) { run = Run::none; return true; }
    bool ok = true;
    iconv_t cd = converter(run);
    if (cd == iconv_t(-1)) {
        for (size_t i = 0; i < pending.size(); i += charLength(run, static_cast<unsigned char>(pending[i])))
            appendReplacement(out);
        ok = false;
    } else {
        (void)iconv(cd, nullptr, nullptr, nullptr, nullptr);
        // Every character here is 2 or 3 bytes of EUC and at most 3 bytes of UTF-8.
        std::vector<char> buffer(pending.size() * 2 + 8);
        char *in = &pending[0];
        size_t inLeft = pending.size();
        while (inLeft > 0) {
            char *outp = buffer.data();
            size_t outLeft = buffer.size();
            const size_t r = iconv(cd, &in, &inLeft, &outp, &outLeft);
            out.append(buffer.data(), size_t(outp - buffer.data()));
            if (r != size_t(-1)) break;
            if (errno == E2BIG) continue;
            // EILSEQ / EINVAL: a code point with no mapping. Skip that one character.
            appendReplacement(out);
            ok = false;
            const size_t skip = std::min(inLeft, charLength(run, static_cast<unsigned char>(*in)));
            in += skip;
            inLeft -= skip;
            (void)iconv(cd, nullptr, nullptr, nullptr, nullptr);
        }
    }
    pending.clear();
    run = Run::none;
    return ok;
}

bool isTextVR(DcmEVR vr) {
    return vr == EVR_PN || vr == EVR_LO || vr == EVR_SH || vr == EVR_ST || vr == EVR_LT || vr == EVR_UT ||
           vr == EVR_UC;
}

bool needsDecoding(const char *bytes, size_t length) {
    for (size_t i = 0; i < length; ++i) {
        const unsigned char b = static_cast<unsigned char>(bytes[i]);
        if (b == 0x1B || b >= 0x80) return true;
    }
    return false;
}

std::vector<std::string> splitValues(const OFString &joined) {
    std::vector<std::string> values;
    std::string current;
    for (size_t i = 0; i < joined.length(); ++i) {
        if (joined[i] == '\\') {
            values.push_back(current);
            current.clear();
        } else {
            current += joined[i];
        }
    }
    values.push_back(current);
    return values;
}

std::string trimmed(const std::string &s) {
    size_t a = 0, b = s.size();
    while (a < b && s[a] == ' ') ++a;
    while (b > a && s[b - 1] == ' ') --b;
    return s.substr(a, b - a);
}

struct Update {
    DcmByteString *element;
    std::string value;
};

// Collects the new values of `item` (and its items) into `updates`; the items whose own (0008,0005)
// must become "ISO_IR 192" into `charsetItems`. False when something cannot be read or an item names
// a character set this fallback is not for.
bool collect(DcmItem *item, ISO2022Terms terms, int depth, std::vector<Update> &updates,
             std::vector<DcmItem *> &charsetItems) {
    if (depth > kMaxDepth) return false;
    OFString own;
    if (depth > 0 && item->findAndGetOFStringArray(DCM_SpecificCharacterSet, own, OFFalse).good()) {
        ISO2022Terms nested;
        if (!parseISO2022Terms(splitValues(own), nested)) return false;
        terms = nested;
        charsetItems.push_back(item);
    }
    for (DcmObject *object = item->nextInContainer(nullptr); object != nullptr; object = item->nextInContainer(object)) {
        const DcmEVR vr = object->ident();
        if (vr == EVR_SQ) {
            DcmSequenceOfItems *sequence = dynamic_cast<DcmSequenceOfItems *>(object);
            if (sequence == nullptr) continue;
            for (DcmObject *child = sequence->nextInContainer(nullptr); child != nullptr;
                 child = sequence->nextInContainer(child)) {
                DcmItem *sub = dynamic_cast<DcmItem *>(child);
                if (sub != nullptr && !collect(sub, terms, depth + 1, updates, charsetItems)) return false;
            }
            continue;
        }
        if (!isTextVR(vr)) continue;
        DcmByteString *element = dynamic_cast<DcmByteString *>(object);
        if (element == nullptr) continue;
        char *bytes = nullptr;
        Uint32 length = 0;
        if (element->getString(bytes, length).bad()) return false;
        if (bytes == nullptr || length == 0 || !needsDecoding(bytes, length)) continue;
        Update update{element, std::string()};
        (void)decodeISO2022(bytes, length, terms, vr == EVR_PN, update.value);
        updates.push_back(std::move(update));
    }
    return true;
}

}  // namespace

bool parseISO2022Terms(const std::vector<std::string> &values, ISO2022Terms &terms) {
    terms = ISO2022Terms();
    for (size_t i = 0; i < values.size(); ++i) {
        const std::string term = trimmed(values[i]);
        if (term.empty() || term == "ISO 2022 IR 6") continue;
        if (term == "ISO 2022 IR 13") {
            if (i == 0) terms.firstIsIR13 = true;
            terms.hasExtension = true;
            terms.hasJIS = true;
        } else if (term == "ISO 2022 IR 87" || term == "ISO 2022 IR 159") {
            terms.hasExtension = true;
            terms.hasJIS = true;
        } else if (term == "ISO 2022 IR 149") {
            terms.hasExtension = true;
            terms.hasIR149 = true;
        } else {
            return false;
        }
    }
    return true;
}

bool decodeISO2022(const char *bytes, size_t length, const ISO2022Terms &terms, bool personName, std::string &out) {
    const G0 initialG0 = terms.firstIsIR13 ? G0::roman : G0::ascii;
    const G1 initialG1 = terms.firstIsIR13 ? G1::katakana : G1::none;
    G0 g0 = initialG0;
    G1 g1 = initialG1;
    bool ok = true;
    std::string pending;
    Run run = Run::none;
    auto pend = [&](Run wanted) {
        if (run != wanted && !flush(pending, run, out)) ok = false;
        run = wanted;
    };
    auto settle = [&] {
        if (!flush(pending, run, out)) ok = false;
    };
    auto bad = [&] {
        settle();
        appendReplacement(out);
        ok = false;
    };
    out.reserve(out.size() + length * 3);
    const unsigned char *p = reinterpret_cast<const unsigned char *>(bytes);
    size_t i = 0;
    while (i < length) {
        const unsigned char b = p[i];
        if (b == 0x1B) {
            settle();
            // ESC, up to three intermediate bytes (0x20–0x2F), one final byte (0x30–0x7E).
            size_t j = i + 1;
            while (j < length && j - i <= 3 && p[j] >= 0x20 && p[j] <= 0x2F) ++j;
            if (j >= length || p[j] < 0x30 || p[j] > 0x7E) {
                bad();  // truncated or malformed: drop ESC and its intermediates
                i = j;
                continue;
            }
            const std::string seq(reinterpret_cast<const char *>(p + i + 1), j - i);
            if (seq == "(B") g0 = G0::ascii;
            else if (seq == "(J") g0 = G0::roman;
            else if (seq == ")I") g1 = G1::katakana;
            else if (seq == "$B" || seq == "$@" || seq == "$(B") g0 = G0::jis0208;
            else if (seq == "$(D") g0 = G0::jis0212;
            else if (seq == "$)C") g1 = G1::ksx1001;
            else bad();
            i = j + 1;
            continue;
        }
        if (b < 0x20 || b == 0x7F) {  // control characters end any invoked set (§6.1.2.5.3)
            settle();
            g0 = initialG0;
            g1 = initialG1;
            out += char(b);
            ++i;
            continue;
        }
        if (b < 0x80) {
            if ((g0 == G0::jis0208 || g0 == G0::jis0212) && b != 0x20) {
                if (i + 1 < length && p[i + 1] >= 0x21 && p[i + 1] <= 0x7E) {
                    pend(Run::eucJP);
                    if (g0 == G0::jis0212) pending += char(0x8F);
                    pending += char(b | 0x80);
                    pending += char(p[i + 1] | 0x80);
                    i += 2;
                } else {
                    bad();  // half a character (an odd count) or a byte out of range
                    ++i;
                }
                continue;
            }
            settle();
            // JIS X 0201 Romaji is taken as ASCII: its 0x5C is still the value delimiter.
            if (b == '\\' || (personName && (b == '^' || b == '='))) {
                g0 = initialG0;
                g1 = initialG1;
            }
            out += char(b);
            ++i;
            continue;
        }
        // G1. Korean files often designate KS X 1001 once and rely on it after a delimiter.
        G1 set = g1;
        if (set == G1::none && terms.hasIR149 && !terms.firstIsIR13) set = G1::ksx1001;
        if (set == G1::katakana && b >= 0xA1 && b <= 0xDF) {
            settle();
            appendUTF8(out, 0xFF61 + (b - 0xA1));
            ++i;
        } else if (set == G1::ksx1001 && b >= 0xA1 && b <= 0xFE && i + 1 < length && p[i + 1] >= 0xA1 &&
                   p[i + 1] <= 0xFE) {
            pend(Run::eucKR);
            pending += char(b);
            pending += char(p[i + 1]);
            i += 2;
        } else {
            bad();
            ++i;
        }
    }
    settle();
    return ok;
}

bool iso2022FallbackFirst(DcmItem *dataset) {
    try {
        if (dataset == nullptr) return false;
        OFString joined;
        if (dataset->findAndGetOFStringArray(DCM_SpecificCharacterSet, joined, OFFalse).bad()) return false;
        ISO2022Terms terms;
        return parseISO2022Terms(splitValues(joined), terms) && terms.hasJIS;
    } catch (...) {
        return false;
    }
}

bool convertISO2022ToUTF8(DcmItem *dataset) {
    try {
        if (dataset == nullptr) return false;
        OFString joined;
        if (dataset->findAndGetOFStringArray(DCM_SpecificCharacterSet, joined, OFFalse).bad()) return false;
        ISO2022Terms terms;
        if (!parseISO2022Terms(splitValues(joined), terms) || !terms.hasExtension) return false;
        std::vector<Update> updates;
        std::vector<DcmItem *> charsetItems;
        if (!collect(dataset, terms, 0, updates, charsetItems)) return false;
        for (const Update &update : updates) {
            if (update.element->putString(update.value.data(), Uint32(update.value.size())).bad()) return false;
        }
        for (DcmItem *item : charsetItems) (void)item->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
        return dataset->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192").good();
    } catch (...) {
        return false;
    }
}

}  // namespace mv
