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
    MV_DCM_ERR_REFUSED = 5,    /* refused by the pre-scan before DCMTK saw it (nesting, element count,
                                  lengths, not DICOM at all); `err` names the limit and the offset */
    MV_DCM_ERR_UNSUPPORTED = 6, /* well-formed, but the transfer syntax (or pixel format) cannot be decoded
                                   or rendered here; `err` names it (a DICOMweb server answers 406) */
    MV_DCM_ERR_NO_PIXELS = 7,  /* there is no top-level Pixel Data (7FE0,0010) before the bytes end */
    MV_DCM_ERR_NOT_FOUND = 8   /* no element at that path, or not a binary value (mv_dcm_bulk_value) */
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

/* Reads up to `cap` bytes into `dst`, continuing where the previous call stopped: returns the count
 * (0 at the end), or -1 when the data cannot be read. */
typedef long (*mv_dcm_read_fn)(void *context, void *dst, size_t cap);

/* The whole-file pre-scan of mv_dcm_parse_file over `size` bytes read in order through `read` (a
 * received instance decrypted as it is read): never more than a small window is held. MV_DCM_OK when
 * mv_dcm_parse_until_pixels may parse the file's first bytes. */
int mv_dcm_prescan_stream(mv_dcm_read_fn read, void *context, uint64_t size, char *err, size_t err_len);

/* Parses the first `length` bytes of a file (already accepted by mv_dcm_prescan_stream) up to its
 * top-level Pixel Data, which is neither read nor needed. MV_DCM_ERR_NO_PIXELS when the bytes end
 * before the Pixel Data tag (the caller gives more bytes, or the whole file to mv_dcm_parse_buffer). */
int mv_dcm_parse_until_pixels(const void *bytes, size_t length, mv_dcm_header **out, char *err, size_t err_len);

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

/* ---------------------------------------------------------------------------------------------
 * Bulk data besides Pixel Data (mv_bulkdata.cpp; docs/api.md, "Bulk data").
 *
 * A binary value is one of VR OB, OD, OF, OL, OV, OW or UN (as DCMTK's JSON writer names it). Its
 * path names it unambiguously: the tag of a top-level element, then for each sequence on the way
 * the item index (from 0) and the tag inside that item. As text (a BulkDataURI's end) it is
 * "GGGGEEEE" or "GGGGEEEE/i/GGGGEEEE/…", tags as 8 upper-case hex digits.
 */

#define MV_DCM_MAX_BULK_PATH 129 /* 65 tags and 64 item indices: the pre-scan's nesting bound */

typedef struct mv_dcm_json_options {
    /* Binary values longer than this many bytes are written as "BulkDataURI": prefix + path instead of
     * "InlineBinary" (at any depth); 0 keeps every value inline. Encapsulated Pixel Data in an item
     * (an undefined length) stays as DCMTK writes it. */
    size_t bulk_threshold;
    /* The URI up to the path, e.g. "http://host/dicom-web/studies/…/instances/…/bulkdata/" (UTF-8,
     * escaped for JSON by the writer). Required when bulk_threshold > 0. */
    const char *bulk_uri_prefix;
} mv_dcm_json_options;

/* mv_dcm_json_from_buffer with options (NULL: the same as mv_dcm_json_from_buffer). */
int mv_dcm_json_from_buffer_with(const void *bytes, size_t length, const mv_dcm_json_options *options, char **json,
                                 size_t *json_len, char *err, size_t err_len);

/* The binary value at `path` (`path_count` numbers: tag, then item index and tag pairs; an odd count
 * up to MV_DCM_MAX_BULK_PATH; a tag is group << 16 | element) in the dataset in `bytes`, read as for
 * mv_dcm_json_from_buffer (the same pre-scan, up to the top-level Pixel Data, which is not found
 * here: it has its own reader). The value is returned little endian whatever the transfer syntax
 * (OW, OF, OD, OL and OV words swapped from big endian), as PS3.18 sends bulk data; `vr` (at least
 * 3 bytes) gets its VR. MV_DCM_ERR_NOT_FOUND: no element there, not a binary value, or an
 * encapsulated value; MV_DCM_ERR_REFUSED: longer than `max_bytes`. On success *out is malloc'ed
 * (release with mv_dcm_free; it holds patient data: zero it first) and *out_len set (it may be 0). */
int mv_dcm_bulk_value(const void *bytes, size_t length, const uint32_t *path, size_t path_count, size_t max_bytes,
                      void **out, size_t *out_len, char *vr, char *err, size_t err_len);

/* ---------------------------------------------------------------------------------------------
 * Pixel data (mv_pixels.cpp; docs/pixels.md). Frames are numbered from 0 here.
 */

#define MV_DCM_UNDEFINED_LENGTH 0xFFFFFFFFu

/* Where the pixel data of a dataset is and what it looks like. */
typedef struct mv_dcm_pixel_layout {
    uint64_t value_offset;  /* offset in the input of the first byte of the Pixel Data value */
    uint32_t value_length;  /* its length, or MV_DCM_UNDEFINED_LENGTH (encapsulated) */
    int encapsulated;       /* 1: a list of items (Basic Offset Table, then fragments) */
    int big_endian;         /* 1: native data in Explicit VR Big Endian (words are swapped by decode) */
    char transfer_syntax[68];
    uint32_t number_of_frames;  /* NumberOfFrames, 1 when absent */
    uint16_t rows, columns, samples_per_pixel, bits_allocated, bits_stored, high_bit;
    uint16_t pixel_representation, planar_configuration;
    char photometric[20];
    uint64_t frame_size;    /* bytes of one native frame (rows x columns x samples x bits allocated / 8) */
    /* Extended Offset Table (7FE0,0001) and Extended Offset Table Lengths (7FE0,0002): where their
     * values are in the input (offset, length); lengths 0 when absent. Validated: 8 bytes a frame. */
    uint64_t eot_offset, eot_length, eot_lengths_offset, eot_lengths_length;
} mv_dcm_pixel_layout;

/* From the start of a DICOM stream (a Part 10 file or a bare dataset) that reaches at least past the
 * Pixel Data element's header (it may stop there, or anywhere after), fills `out`. Runs the same
 * pre-scan as the parse entry points (MV_DCM_ERR_REFUSED), then reads the image attributes with DCMTK.
 * MV_DCM_ERR_NO_PIXELS when there is no Pixel Data, MV_DCM_ERR_PARSE when the image attributes are
 * missing or inconsistent (e.g. native data shorter than its frames), MV_DCM_ERR_UNSUPPORTED for a
 * deflated dataset (frame offsets would be in the inflated stream). Memory: the DCMTK header only. */
int mv_dcm_pixel_layout_read(const void *bytes, size_t length, mv_dcm_pixel_layout *out, char *err, size_t err_len);

/* 1 when mv_dcm_decode_frame can decode (or copy) frames stored in this transfer syntax, else 0. */
int mv_dcm_can_decode(const char *transfer_syntax);

/* Decodes one frame (its compressed bytes: the fragments of that frame joined, or one native frame)
 * to native little endian bytes, as Explicit VR Little Endian holds them. Supported: JPEG baseline
 * (1.2.840.10008.1.2.4.50), extended (.51), lossless (.57, .70), JPEG-LS (.80, .81), RLE (1.2.5), and
 * the native syntaxes (copied; big endian words swapped). Other syntaxes: MV_DCM_ERR_UNSUPPORTED.
 * A decoded frame larger than `max_frame_bytes` is refused before anything is allocated. On success
 * *out is malloc'ed (release with mv_dcm_free), and *photometric / *planar describe the decoded
 * pixels (JPEG decoders turn YBR into RGB; `photometric` holds at least 20 bytes).
 * Memory: the input frame, one copy of it, and the decoded frame. */
int mv_dcm_decode_frame(const mv_dcm_pixel_layout *layout, const void *frame, size_t frame_len, size_t max_frame_bytes,
                        void **out, size_t *out_len, char *photometric, uint16_t *planar, char *err, size_t err_len);

enum { MV_DCM_RENDER_JPEG = 0, MV_DCM_RENDER_PNG = 1 };
enum { MV_DCM_VOI_LINEAR = 0, MV_DCM_VOI_LINEAR_EXACT = 1, MV_DCM_VOI_SIGMOID = 2 };

typedef struct mv_dcm_render_options {
    int format;                 /* MV_DCM_RENDER_JPEG or MV_DCM_RENDER_PNG */
    int quality;                /* JPEG quality 1-100 */
    int has_window;             /* 0: the file's first window, else its first VOI LUT, else min-max */
    double window_center, window_width;
    int window_function;        /* MV_DCM_VOI_* */
    uint32_t viewport_width;    /* fit within width x height keeping the aspect ratio; 0 x 0: as is */
    uint32_t viewport_height;
    size_t max_frame_bytes;     /* refuse decoded frames (and viewports) larger than this */
} mv_dcm_render_options;

/* Renders one frame to JPEG or PNG with DCMTK's dcmimage. `header` is the start of the stream, as
 * for mv_dcm_pixel_layout_read (only the attributes before Pixel Data are used: VOI LUT, windows,
 * rescale, palette); `frame` is that one frame as stored (as for mv_dcm_decode_frame). On success
 * *out is malloc'ed (release with mv_dcm_free). Memory: a few copies of one frame, and the image. */
int mv_dcm_render(const void *header, size_t header_len, const void *frame, size_t frame_len,
                  const mv_dcm_render_options *options, void **out, size_t *out_len, char *err, size_t err_len);

void mv_dcm_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* MV_DCMTK_H */
