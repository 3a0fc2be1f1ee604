// Bulk data besides Pixel Data (PS3.18 §8.7.1.1, §9.6.1.3): which binary values `/metadata` names by a
// BulkDataURI, the path scheme of those URIs, and reading the value one names. Over the DCMTK shim
// (mv_bulkdata.cpp); docs/api.md, "Bulk data", has the choices.
internal import CDCMTKShim
#if canImport(Glibc)
import Glibc
#endif

/// How `/metadata` writes binary values (VR OB, OD, OF, OL, OV, OW, UN): longer than `threshold`
/// bytes, as `"BulkDataURI": uriPrefix + path`; otherwise inline (`InlineBinary`).
public struct DICOMBulkDataOptions: Sendable, Equatable {
    /// 1 KiB, as dcm4chee's default: icon images, overlays, LUTs, waveforms, documents and large
    /// private values become URIs; short values (a private flag, a small LUT descriptor) stay inline,
    /// where a viewer reads them without another request.
    public static let defaultThreshold = 1024

    /// The URI up to the path: `…/instances/{sop}/bulkdata/`.
    public let uriPrefix: String
    public let threshold: Int

    public init(uriPrefix: String, threshold: Int = Self.defaultThreshold) {
        self.uriPrefix = uriPrefix
        self.threshold = max(0, threshold)
    }
}

/// Where an element is in a dataset: a top-level tag, then for each sequence on the way the item
/// index (from 0) and the tag inside that item. As text, the end of a BulkDataURI:
/// `60003000`, `00880200/0/7FE00010`, `00660002/1/00660011/0/00660016`.
public struct DICOMElementPath: Sendable, Hashable, CustomStringConvertible {
    /// Tag, item index, tag, … (an odd count); a tag is `group << 16 | element`.
    public let steps: [UInt32]

    /// Sequences a path may go through: the parser's nesting limit.
    public static let maxDepth = 64

    /// Parses the text form; nil unless every tag is 8 hex digits and every index a decimal number,
    /// at most `maxDepth` sequences deep.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count % 2 == 1, parts.count <= 2 * Self.maxDepth + 1 else { return nil }
        var steps: [UInt32] = []
        for (i, part) in parts.enumerated() {
            if i % 2 == 0 {
                guard part.count == 8, part.allSatisfy(\.isHexDigit), let tag = UInt32(part, radix: 16) else { return nil }
                steps.append(tag)
            } else {
                guard !part.isEmpty, part.count <= 9, part.allSatisfy({ $0.isASCII && $0.isNumber }), let index = UInt32(part) else { return nil }
                steps.append(index)
            }
        }
        self.steps = steps
    }

    /// The top-level Pixel Data (7FE0,0010), which has a reader of its own (frames, ranges).
    public var isTopLevelPixelData: Bool { steps == [0x7FE0_0010] }

    /// The canonical text: tags as 8 upper-case hex digits.
    public var description: String {
        steps.enumerated().map { i, n in
            guard i % 2 == 0 else { return String(n) }
            let hex = String(n, radix: 16, uppercase: true)
            return String(repeating: "0", count: 8 - hex.count) + hex
        }.joined(separator: "/")
    }
}

/// A binary value read by its path: little endian whatever the file's transfer syntax.
public struct DICOMBinaryValue: Sendable {
    /// The VR as DICOM JSON names it (OB, OD, OF, OL, OV, OW or UN).
    public let vr: String
    public let bytes: [UInt8]

    public init(vr: String, bytes: [UInt8]) {
        self.vr = vr
        self.bytes = bytes
    }
}

extension DICOMParser {
    /// The binary value at `path` in the dataset in `bytes` (a Part 10 file or a bare dataset, which
    /// may stop anywhere after the top-level Pixel Data tag; that element itself is not found here).
    /// Throws `.noSuchElement` when nothing is there or it is not binary, `.malformed` for bytes the
    /// parser refuses, or a value longer than `maxBytes`.
    public static func binaryValue(bytes: [UInt8], at path: DICOMElementPath, maxBytes: Int) throws(DICOMError) -> DICOMBinaryValue {
        var err = [CChar](repeating: 0, count: 512)
        var vr = [CChar](repeating: 0, count: 4)
        var out: UnsafeMutableRawPointer?
        var length = 0
        let rc = bytes.withUnsafeBytes { raw in
            path.steps.withUnsafeBufferPointer { steps in
                mv_dcm_bulk_value(raw.baseAddress, raw.count, steps.baseAddress, steps.count, max(0, maxBytes), &out, &length, &vr, &err, err.count)
            }
        }
        switch Int(rc) {
        case Int(MV_DCM_OK): break
        case Int(MV_DCM_ERR_NOT_FOUND): throw .noSuchElement(cString(err))
        case Int(MV_DCM_ERR_PARSE), Int(MV_DCM_ERR_REFUSED): throw .malformed(cString(err))
        case Int(MV_DCM_ERR_DICTIONARY): throw .dictionaryUnavailable(cString(err))
        default: throw .internalFailure(cString(err))
        }
        guard let out else { throw .internalFailure("the shim returned no value") }
        // Patient data: zeroed before the shim's buffer goes back to the allocator.
        defer {
            memset(out, 0, length)
            mv_dcm_free(out)
        }
        let value = Array(UnsafeRawBufferPointer(start: out, count: length))
        return DICOMBinaryValue(vr: cString(vr), bytes: value)
    }
}
