// Swift value types over the DCMTK shim. Nothing here knows about encryption or storage.
internal import CDCMTKShim
#if canImport(Glibc)
import Glibc
#endif

/// A DICOM tag (group, element).
public struct DICOMTag: Hashable, Sendable, CustomStringConvertible {
    public let group: UInt16
    public let element: UInt16
    public init(_ group: UInt16, _ element: UInt16) {
        self.group = group
        self.element = element
    }
    public var description: String {
        "(" + String(group, radix: 16, uppercase: true).leftPadded(4) + ","
            + String(element, radix: 16, uppercase: true).leftPadded(4) + ")"
    }

    public static let specificCharacterSet = DICOMTag(0x0008, 0x0005)
    public static let sopClassUID = DICOMTag(0x0008, 0x0016)
    public static let sopInstanceUID = DICOMTag(0x0008, 0x0018)
    public static let studyDate = DICOMTag(0x0008, 0x0020)
    public static let studyTime = DICOMTag(0x0008, 0x0030)
    public static let accessionNumber = DICOMTag(0x0008, 0x0050)
    public static let modality = DICOMTag(0x0008, 0x0060)
    public static let institutionName = DICOMTag(0x0008, 0x0080)
    public static let referringPhysicianName = DICOMTag(0x0008, 0x0090)
    public static let studyDescription = DICOMTag(0x0008, 0x1030)
    public static let seriesDescription = DICOMTag(0x0008, 0x103E)
    public static let performingPhysicianName = DICOMTag(0x0008, 0x1050)
    public static let patientName = DICOMTag(0x0010, 0x0010)
    public static let patientID = DICOMTag(0x0010, 0x0020)
    public static let issuerOfPatientID = DICOMTag(0x0010, 0x0021)
    public static let patientBirthDate = DICOMTag(0x0010, 0x0030)
    public static let patientSex = DICOMTag(0x0010, 0x0040)
    public static let bodyPartExamined = DICOMTag(0x0018, 0x0015)
    public static let studyInstanceUID = DICOMTag(0x0020, 0x000D)
    public static let seriesInstanceUID = DICOMTag(0x0020, 0x000E)
    public static let studyID = DICOMTag(0x0020, 0x0010)
    public static let seriesNumber = DICOMTag(0x0020, 0x0011)
    public static let instanceNumber = DICOMTag(0x0020, 0x0013)
    public static let numberOfFrames = DICOMTag(0x0028, 0x0008)
    public static let rows = DICOMTag(0x0028, 0x0010)
    public static let columns = DICOMTag(0x0028, 0x0011)
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Why a file could not be read as DICOM. The messages name the problem, never a patient value.
public enum DICOMError: Error, Equatable, Sendable, CustomStringConvertible {
    /// DCMTK's data dictionary is missing: implicit-VR files would decode wrongly, so nothing is parsed.
    case dictionaryUnavailable(String)
    /// The file could not be opened or read.
    case unreadable(String)
    /// The bytes are not well-formed DICOM (garbage, truncated, bad lengths).
    case malformed(String)
    /// Well-formed, but an attribute the vault needs is absent or empty.
    case missingAttribute(String)
    /// The shim failed unexpectedly (out of memory, an internal exception).
    case internalFailure(String)
    /// Frames in this transfer syntax cannot be decoded or rendered here (a DICOMweb server answers 406).
    case unsupportedTransferSyntax(String)
    /// Well-formed, but the pixel format cannot be handled here (e.g. 64-bit pixels for rendering).
    case unsupported(String)
    /// A frame index (0-based) at or past the number of frames.
    case frameOutOfRange(requested: Int, available: Int)
    /// The dataset has no top-level Pixel Data (or the bytes stop before it).
    case noPixelData(String)
    /// No element at a bulk data path, or not a binary value there (the message names tags and items).
    case noSuchElement(String)

    public var description: String {
        switch self {
        case .dictionaryUnavailable(let m): m
        case .unreadable(let m): m
        case .malformed(let m): m
        case .missingAttribute(let name): "not importable: missing \(name)"
        case .internalFailure(let m): "DICOM parser failure: \(m)"
        case .unsupportedTransferSyntax(let uid):
            "frames in transfer syntax \(uid) cannot be decoded here (decodable: JPEG baseline, extended and lossless, JPEG-LS, RLE, and the native syntaxes)"
        case .unsupported(let m): "unsupported pixel data: \(m)"
        case .frameOutOfRange(let requested, let available):
            "frame index \(requested) is out of range: the instance has \(available) frame(s) (indices 0..<\(available))"
        case .noPixelData(let m): m
        case .noSuchElement(let m): m
        }
    }
}

/// What the vault reads from a file's header: identifiers (sealed by the store), UIDs, and
/// technical attributes. Values are UTF-8 with DICOM padding trimmed.
public struct DICOMHeader: Sendable, Equatable {
    /// Every short top-level value, by tag.
    public let values: [DICOMTag: String]
    public let transferSyntaxUID: String
    public let hasFileMeta: Bool
    /// False when the file's Specific Character Set could not be converted to UTF-8 on this machine
    /// (values are then kept as read, byte for byte).
    public let characterSetConverted: Bool

    public init(values: [DICOMTag: String], transferSyntaxUID: String, hasFileMeta: Bool, characterSetConverted: Bool) {
        self.values = values
        self.transferSyntaxUID = transferSyntaxUID
        self.hasFileMeta = hasFileMeta
        self.characterSetConverted = characterSetConverted
    }

    /// The trimmed value of `tag`, or nil when absent or empty.
    public subscript(_ tag: DICOMTag) -> String? {
        guard let v = values[tag] else { return nil }
        let t = v.trimmingDICOMPadding()
        return t.isEmpty ? nil : t
    }

    public var sopInstanceUID: String? { self[.sopInstanceUID] }
    public var seriesInstanceUID: String? { self[.seriesInstanceUID] }
    public var studyInstanceUID: String? { self[.studyInstanceUID] }
}

extension String {
    fileprivate func replacingPrefix(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }

    /// Removes the spaces and NULs DICOM pads values with, at both ends.
    public func trimmingDICOMPadding() -> String {
        var scalars = Substring(self).unicodeScalars
        while let f = scalars.first, f == " " || f == "\0" { scalars.removeFirst() }
        while let l = scalars.last, l == " " || l == "\0" { scalars.removeLast() }
        return String(scalars)
    }
}

/// Parses DICOM headers through the DCMTK shim. Stateless and thread-safe.
public enum DICOMParser {
    /// The tags the vault keeps; everything else stays only in the encrypted blob.
    static let keptTags: [DICOMTag] = [
        .specificCharacterSet, .sopClassUID, .sopInstanceUID, .studyDate, .studyTime, .accessionNumber, .modality,
        .institutionName, .referringPhysicianName, .studyDescription, .seriesDescription, .performingPhysicianName,
        .patientName, .patientID, .issuerOfPatientID, .patientBirthDate, .patientSex, .bodyPartExamined,
        .studyInstanceUID, .seriesInstanceUID, .studyID, .seriesNumber, .instanceNumber, .numberOfFrames, .rows,
        .columns,
    ]

    /// Checks that DCMTK is usable (its data dictionary is loaded). Call once at start-up to fail loudly.
    public static func checkAvailable() throws(DICOMError) {
        var err = [CChar](repeating: 0, count: 512)
        let rc = mv_dcm_initialize(&err, err.count)
        if rc != 0 { throw .dictionaryUnavailable(cString(err)) }
    }

    /// Parses the file at `path`, walking its structure without loading pixel data. Input beyond the
    /// parser's limits (nesting deeper than 64 sequences, more than 1,000,000 elements, lengths past the
    /// end, not DICOM at all) is refused as `.malformed` with the limit and offset, before DCMTK sees it.
    public static func parse(path: String) throws(DICOMError) -> DICOMHeader {
        var err = [CChar](repeating: 0, count: 512)
        var handle: OpaquePointer?
        let rc = mv_dcm_parse_file(path, &handle, &err, err.count)
        // The pre-scan's reasons are already specific (limit, tag, offset): keep them as they are.
        if rc == Int32(MV_DCM_ERR_REFUSED) { throw .malformed(cString(err)) }
        do {
            return try finish(rc, handle, err)
        } catch .malformed(let reason) {
            throw .malformed(explain(reason, probe: probe(path)))
        }
    }

    /// What the first bytes say: empty, a Part 10 file ("DICM" at offset 128), or something else.
    enum Probe { case empty, part10, other }

    static func probe(_ path: String) -> Probe {
        guard let f = fopen(path, "rb") else { return .other }
        defer { fclose(f) }
        var head = [UInt8](repeating: 0, count: 132)
        let n = fread(&head, 1, 132, f)
        if n == 0 { return .empty }
        return n == 132 && head[128...] == [0x44, 0x49, 0x43, 0x4D][...] ? .part10 : .other
    }

    /// Turns DCMTK's condition text into a reason a radiologist can act on.
    static func explain(_ dcmtk: String, probe: Probe) -> String {
        let detail = dcmtk.replacingPrefix("not a readable DICOM file: ", with: "")
        switch probe {
        case .empty:
            return "empty file"
        case .part10:
            let what =
                detail.contains("premature end") || detail.contains("End of stream")
                ? "truncated, or an element length runs past the end of the file"
                : "its structure is invalid (bad element length, tag or value representation)"
            return "malformed DICOM file: \(what) (DCMTK: \(detail))"
        case .other:
            return "not a DICOM file: no 'DICM' marker and not a readable bare dataset (DCMTK: \(detail))"
        }
    }

    /// Parses a file already in memory.
    public static func parse(bytes: [UInt8]) throws(DICOMError) -> DICOMHeader {
        let result: Result<DICOMHeader, DICOMError> = bytes.withUnsafeBytes { b in
            do throws(DICOMError) { return .success(try parse(buffer: b)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func parse(buffer: UnsafeRawBufferPointer) throws(DICOMError) -> DICOMHeader {
        var err = [CChar](repeating: 0, count: 512)
        var handle: OpaquePointer?
        let rc = mv_dcm_parse_buffer(buffer.baseAddress, buffer.count, &handle, &err, err.count)
        return try finish(rc, handle, err)
    }

    /// The dataset in `bytes` (which may stop anywhere after the pixel data tag) as one DICOM JSON
    /// object (PS3.18 F.2), without file meta and pixel data. With `bulkData`, binary values longer
    /// than its threshold are a `BulkDataURI` (its prefix and the element's path) instead of inline.
    public static func json(bytes: [UInt8], bulkData: DICOMBulkDataOptions? = nil) throws(DICOMError) -> String {
        var err = [CChar](repeating: 0, count: 512)
        var out: UnsafeMutablePointer<CChar>?
        var length = 0
        let rc = (bulkData?.uriPrefix ?? "").withCString { prefix in
            var options = mv_dcm_json_options(bulk_threshold: bulkData?.threshold ?? 0, bulk_uri_prefix: prefix)
            return bytes.withUnsafeBytes { mv_dcm_json_from_buffer_with($0.baseAddress, $0.count, &options, &out, &length, &err, err.count) }
        }
        guard rc == 0, let out else {
            throw rc == Int32(MV_DCM_ERR_PARSE) || rc == Int32(MV_DCM_ERR_REFUSED) ? .malformed(cString(err)) : .internalFailure(cString(err))
        }
        defer { mv_dcm_free_string(out) }
        return out.withMemoryRebound(to: UInt8.self, capacity: length) { String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self) }
    }

    static func finish(_ rc: Int32, _ handle: OpaquePointer?, _ err: [CChar]) throws(DICOMError) -> DICOMHeader {
        let message = cString(err)
        switch Int(rc) {
        case Int(MV_DCM_OK): break
        case Int(MV_DCM_ERR_DICTIONARY): throw .dictionaryUnavailable(message)
        case Int(MV_DCM_ERR_IO): throw .unreadable(message)
        case Int(MV_DCM_ERR_PARSE), Int(MV_DCM_ERR_REFUSED): throw .malformed(message)
        default: throw .internalFailure(message)
        }
        guard let handle else { throw .internalFailure("parser returned no header") }
        defer { mv_dcm_header_free(handle) }
        var values: [DICOMTag: String] = [:]
        for tag in keptTags {
            if let c = mv_dcm_header_get(handle, tag.group, tag.element) {
                values[tag] = cString(c)
            }
        }
        return DICOMHeader(
            values: values, transferSyntaxUID: cString(mv_dcm_header_transfer_syntax(handle)),
            hasFileMeta: mv_dcm_header_has_file_meta(handle) != 0,
            characterSetConverted: mv_dcm_header_charset_converted(handle) != 0)
    }
}

/// Decodes a NUL-terminated C string as UTF-8 (invalid sequences become U+FFFD).
private func cString(_ p: UnsafePointer<CChar>) -> String {
    var n = 0
    while p[n] != 0 { n += 1 }
    return p.withMemoryRebound(to: UInt8.self, capacity: n) { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) }
}

func cString(_ a: [CChar]) -> String {
    a.withUnsafeBufferPointer { cString($0.baseAddress!) }
}
