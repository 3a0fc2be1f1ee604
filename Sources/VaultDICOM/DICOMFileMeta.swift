// PS3.10 file meta information for bare datasets: a file stored without a Part 10 header (no preamble,
// no "DICM", no group 0002) is served over DICOMweb with a generated one in front of its unchanged bytes
// (PS3.18 requires application/dicom to be in the PS3.10 format). The stored bytes are never rewritten.

/// Builds the preamble, "DICM" and group 0002 (Explicit VR Little Endian) for a bare dataset.
public enum DICOMFileMeta {
    /// (0002,0012): MedVault's own UID, derived from the fixed UUID 7a147c57-1904-45d6-8ae2-f4cf33fdae40
    /// (PS3.5 B.2, "2.25." followed by the UUID as one decimal integer).
    public static let implementationClassUID = "2.25.162272183342313715344675476885190061632"
    /// (0002,0013).
    public static let implementationVersionName = "MEDVAULT"

    private static let magic: [UInt8] = Array("DICM".utf8)

    /// True when `bytes` start with a Part 10 header: 128 bytes of preamble, then "DICM".
    public static func hasPart10Header(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.count >= 132 && bytes.dropFirst(128).prefix(4).elementsEqual(magic)
    }

    /// 128 zero bytes, "DICM", then (0002,0000) group length, (0002,0001) version 00\01, (0002,0002)
    /// and (0002,0003) the SOP Class and Instance UIDs, (0002,0010) the transfer syntax of the dataset
    /// that follows, (0002,0012) and (0002,0013) MedVault's implementation UID and name. UI values are
    /// padded with NUL to an even length, SH with a space.
    public static func build(sopClassUID: String, sopInstanceUID: String, transferSyntaxUID: String) -> [UInt8] {
        var group: [UInt8] = []
        func element(_ element: UInt16, _ vr: String, _ value: [UInt8]) {
            group += le16(0x0002) + le16(element) + Array(vr.utf8)
            if vr == "OB" {
                group += [0, 0] + le32(UInt32(value.count))
            } else {
                group += le16(UInt16(value.count))
            }
            group += value
        }
        func padded(_ s: String, _ pad: UInt8) -> [UInt8] {
            let b = Array(s.utf8)
            return b.count % 2 == 0 ? b : b + [pad]
        }
        element(0x0001, "OB", [0x00, 0x01])
        element(0x0002, "UI", padded(sopClassUID, 0))
        element(0x0003, "UI", padded(sopInstanceUID, 0))
        element(0x0010, "UI", padded(transferSyntaxUID, 0))
        element(0x0012, "UI", padded(implementationClassUID, 0))
        element(0x0013, "SH", padded(implementationVersionName, 0x20))
        let length = le16(0x0002) + le16(0x0000) + Array("UL".utf8) + le16(4) + le32(UInt32(group.count))
        return [UInt8](repeating: 0, count: 128) + magic + length + group
    }

    /// The file meta to put in front of a stored instance, from the start of its bytes: nil when they
    /// already start with a Part 10 header (or carry group 0002 without a preamble). `prefix` is the whole instance when `complete`, else its
    /// first bytes, which must reach the top-level Pixel Data element (the header is parsed up to it).
    /// Throws when the SOP Class, SOP Instance or transfer syntax cannot be read from the prefix.
    public static func forStoredBytes(prefix: [UInt8], complete: Bool) throws(DICOMError) -> [UInt8]? {
        if hasPart10Header(prefix) { return nil }
        let header: DICOMHeader
        if complete {
            header = try DICOMParser.parse(bytes: prefix)
        } else {
            // The prefix may stop inside Pixel Data, which the parser refuses: parse the dataset up to
            // the Pixel Data element (its tag, VR and length take 8 bytes implicit, 12 explicit).
            let layout = try DICOMPixelLayout.read(prefix)
            let implicit = layout.transferSyntaxUID == "1.2.840.10008.1.2"
            let cut = Int(layout.valueOffset) - (implicit ? 8 : 12)
            let tag: [UInt8] = layout.isBigEndian ? [0x7F, 0xE0, 0x00, 0x10] : [0xE0, 0x7F, 0x10, 0x00]
            guard cut > 0, cut + 4 <= prefix.count, prefix[cut..<(cut + 4)].elementsEqual(tag) else {
                throw .malformed("the Pixel Data element is not where its layout says")
            }
            header = try DICOMParser.parse(bytes: Array(prefix[..<cut]))
        }
        // Group 0002 without the preamble: DCMTK reads it as file meta; it is left as stored.
        if header.hasFileMeta { return nil }
        guard let sopClass = header[.sopClassUID] else { throw .missingAttribute("SOP Class UID") }
        guard let sopInstance = header.sopInstanceUID else { throw .missingAttribute("SOP Instance UID") }
        guard !header.transferSyntaxUID.isEmpty else { throw .malformed("no transfer syntax detected") }
        return build(sopClassUID: sopClass, sopInstanceUID: sopInstance, transferSyntaxUID: header.transferSyntaxUID)
    }

    private static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    private static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
}
