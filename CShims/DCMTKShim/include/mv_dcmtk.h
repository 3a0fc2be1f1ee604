/*
 * mv_dcmtk.h — a plain C door to DCMTK's dcmdata, for Swift.
 *
 * Why this shim exists: Swift's C++ interop cannot import DCMTK's macros, OFString or its
 * streams, and cannot catch C++ exceptions. Every entry point here is total: it catches
 * everything, returns a status code, and writes a human-readable reason into `err`.
 * No C++ type crosses this header. Every symbol carries the `mv_dcm_` prefix.
 */
#ifndef MV_DCMTK_H
#define MV_DCMTK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every call. */
enum {
    MV_DCM_OK = 0,
    MV_DCM_ERR_DICTIONARY = 1, /* DCMTK's data dictionary is not loaded: nothing can be parsed safely */
    MV_DCM_ERR_PARSE = 2,      /* the bytes are not well-formed DICOM */
    MV_DCM_ERR_IO = 3,         /* the file could not be opened or read */
    MV_DCM_ERR_INTERNAL = 4,   /* an unexpected C++ exception or allocation failure */
    MV_DCM_ERR_REFUSED = 5     /* refused by the pre-scan before DCMTK saw it (nesting, element count,
                                  lengths, not DICOM at all); `err` names the limit and the offset */
};

/* An opaque parsed header. Owned by the caller; release with mv_dcm_header_free. */
typedef struct mv_dcm_header mv_dcm_header;

/* Silences DCMTK's own logging (it would print patient values to stderr) and checks that the
 * data dictionary is loaded. Idempotent and thread-safe. */
int mv_dcm_initialize(char *err, size_t err_len);

/* Every parse entry point below first runs a structural pre-scan (mv_prescan.cpp) that walks the
 * elements without recursion and without reading values, and refuses (MV_DCM_ERR_REFUSED): sequences
 * nested deeper than 64 levels, more than 1,000,000 elements, lengths running past the end of the data
 * or of their sequence, input that is neither a Part 10 file nor a plausible bare dataset, and a
 * deflated dataset inflating past 1 GiB. DCMTK then parses on a stack with known headroom (a helper
 * thread with a 16 MiB stack when the caller's thread has less than 2 MiB left). */

/* Parses the DICOM file at `path` (Part 10 with meta header, or a bare dataset). The whole file
 * structure is walked so that truncation and bad lengths are found, but values longer than
 * 4 KiB (pixel data) are never loaded into memory. Top-level string values are converted to
 * UTF-8 according to Specific Character Set (0008,0005). */
int mv_dcm_parse_file(const char *path, mv_dcm_header **out, char *err, size_t err_len);

/* Same, from a buffer in memory (the buffer is not retained). */
int mv_dcm_parse_buffer(const void *bytes, size_t length, mv_dcm_header **out, char *err, size_t err_len);

/* The value of a top-level element as UTF-8 text, multiple values joined by '\\', or NULL when the
 * element is absent. The pointer stays valid until mv_dcm_header_free. */
const char *mv_dcm_header_get(const mv_dcm_header *header, uint16_t group, uint16_t element);

/* 1 when the file had a Part 10 meta header (preamble, "DICM", group 0002), else 0. */
int mv_dcm_header_has_file_meta(const mv_dcm_header *header);

/* 1 when every value is valid UTF-8 (conversion succeeded or was not needed); 0 when the file's
 * character set could not be converted here (e.g. ISO 2022 IR 87) and raw values were kept. */
int mv_dcm_header_charset_converted(const mv_dcm_header *header);

/* The transfer syntax UID the dataset was encoded in (never NULL; may be empty). */
const char *mv_dcm_header_transfer_syntax(const mv_dcm_header *header);

void mv_dcm_header_free(mv_dcm_header *header);

/* The dataset in `bytes` (a Part 10 file or a bare dataset, possibly cut off after its pixel data
 * tag) as DICOM JSON (PS3.18 F.2, one object), UTF-8, without the file meta and without pixel data.
 * On success *json is malloc'ed (release with mv_dcm_free_string) and *json_len set. */
int mv_dcm_json_from_buffer(const void *bytes, size_t length, char **json, size_t *json_len, char *err, size_t err_len);

void mv_dcm_free_string(char *s);

#ifdef __cplusplus
}
#endif

#endif /* MV_DCMTK_H */
