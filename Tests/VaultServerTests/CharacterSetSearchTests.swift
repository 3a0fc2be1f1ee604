import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultServer
import VaultStore

/// Japanese names, searched as a viewer would (`PatientName=*山田*`), in a file written in UTF-8 and in
/// one written with ISO 2022 IR 87 code extensions (pydicom encodes both).
@Suite struct CharacterSetSearchTests {
    static let name = "Yamada^Tarou=山田^太郎=やまだ^たろう"

    /// Writes a small Secondary Capture instance with `charset` and the name, and returns its path.
    /// `rawName` (hex): the name's bytes exactly as given, for malformed values pydicom would not write.
    static func write(_ path: String, charset: [String], patientID: String, name: String = name, rawName: String? = nil) throws {
        let script = """
            import sys, json, pydicom
            from pydicom.dataset import Dataset, FileMetaDataset
            from pydicom.uid import generate_uid, ExplicitVRLittleEndian
            from pydicom.valuerep import PersonName
            path, charset, pid, name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
            if len(sys.argv) > 5: name = PersonName(bytes.fromhex(sys.argv[5]))
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
            ds.PatientName, ds.PatientID = name, pid
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.StudyDate, ds.Modality = "20240102", "OT"
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
            """
        let charsets = String(decoding: try JSONSerialization.data(withJSONObject: charset), as: UTF8.self)
        let r = try run("/usr/bin/env", ["python3", "-c", script, path, charsets, patientID, name] + (rawName.map { [$0] } ?? []))
        #expect(r.status == 0, "\(r.stderr)")
    }

    static func search(_ vault: Vault, _ dir: TempDir, _ query: String) async throws -> [String] {
        try vault.addUser("rad", role: .radiologist)
        let token = try vault.issueToken(for: "rad", lifetime: 3600).token
        let app = VaultAPIServer(vault: vault, socketPath: dir.sub("unused.sock")).makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 4)
        return try await app.test(.router) { client in
            let response = try await client.execute(uri: "/dicom-web/studies?" + query, method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(response.status == .ok)
            let objects = (try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]]) ?? []
            return objects.compactMap { (($0["00100020"] as? [String: Any])?["Value"] as? [String])?.first }
        }
    }

    @Test func aUTF8JapaneseNameIsFoundAndSplitIntoGroups() async throws {
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/utf8.dcm"), charset: ["ISO_IR 192"], patientID: "JP-UTF8")
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        #expect(try await Self.search(vault, dir, "PatientName=*%E5%B1%B1%E7%94%B0*") == ["JP-UTF8"])  // *山田*
    }

    /// Debian 12's DCMTK converts with glibc's iconv, which has no ISO-IR-87 (JIS X 0208 without ISO 2022
    /// framing): the shim's fallback (mv_iso2022.cpp) decodes the escape sequences itself
    /// (docs/api.md, "Character sets").
    @Test func anISO2022IR87JapaneseNameIsFound() async throws {
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/jis.dcm"), charset: ["", "ISO 2022 IR 87"], patientID: "JP-JIS")
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        let patient = try #require(try vault.listStudies().first?.patient)
        let found = try await Self.search(vault, dir, "PatientName=*%E5%B1%B1%E7%94%B0*")
        #expect(patient.characterSetConverted)
        #expect(patient.name == Self.name)
        #expect(found == ["JP-JIS"])
    }

    /// `/metadata` of the same ISO 2022 IR 87 instance: the shim's fallback decodes the name before
    /// DCMTK's JSON writer splits it, so the PN value carries its three groups in UTF-8 (PS3.18 F.2.2).
    @Test func metadataOfAnISO2022IR87InstanceHasTheNameGroupsInUTF8() async throws {
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/jis.dcm"), charset: ["", "ISO 2022 IR 87"], patientID: "JP-JIS")
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        let study = try #require(try vault.listStudies().first?.study.studyUID)
        try vault.addUser("rad", role: .radiologist)
        let token = try vault.issueToken(for: "rad", lifetime: 3600).token
        let app = VaultAPIServer(vault: vault, socketPath: dir.sub("unused.sock")).makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 4)
        try await app.test(.router) { client in
            let response = try await client.execute(uri: "/dicom-web/studies/\(study)/metadata", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(response.status == .ok)
            let objects = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
            let name = try #require(objects.first?["00100010"] as? [String: Any])
            #expect(name["vr"] as? String == "PN")
            let groups = try #require((name["Value"] as? [[String: String]])?.first)
            #expect(groups == ["Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"])
            // The value is UTF-8 now, and says so.
            #expect((objects.first?["00080005"] as? [String: Any])?["Value"] as? [String] == ["ISO_IR 192"])
        }
    }

    /// PS3.5 Annex H: JIS X 0201 katakana in G1 from the start (value 1 is ISO 2022 IR 13), then kanji and
    /// hiragana in JIS X 0208 (pydicom writes them with ESC $ B … ESC ( J).
    @Test func anIR13KatakanaAndIR87NameIsDecodedAndFound() async throws {
        let name = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/kana.dcm"), charset: ["ISO 2022 IR 13", "ISO 2022 IR 87"], patientID: "JP-KANA", name: name)
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        let patient = try #require(try vault.listStudies().first?.patient)
        #expect(patient.characterSetConverted)
        #expect(patient.name == name)
        #expect(try await Self.search(vault, dir, "PatientName=*%E5%B1%B1%E7%94%B0*") == ["JP-KANA"])  // *山田*
    }

    /// PS3.5 Annex I: KS X 1001 in G1 (ESC $ ) C before each Korean component). DCMTK converts
    /// `\ISO 2022 IR 149` alone itself (its iconv name is EUC-KR); with IR 87 beside it DCMTK fails and the
    /// shim's fallback decodes the Korean. JIS X 0212 (IR 159) and `ISO 2022 IR 13` alone (katakana in G1,
    /// no escape sequence) only ever go through the fallback.
    @Test(arguments: [
        (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
        (["", "ISO 2022 IR 149", "ISO 2022 IR 87"], "Hong^Gildong=洪^吉洞=홍^길동"),
        (["", "ISO 2022 IR 159"], "Yamada^丂"),
        (["", "ISO 2022 IR 87", "ISO 2022 IR 159"], "山田^丂"),
        (["ISO 2022 IR 13"], "ﾔﾏﾀﾞ^ﾀﾛｳ"),
    ])
    func aNameInAnotherISO2022SetIsDecoded(charset: [String], name: String) async throws {
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/other.dcm"), charset: charset, patientID: "OTHER-1", name: name)
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        let patient = try #require(try vault.listStudies().first?.patient)
        #expect(patient.characterSetConverted)
        #expect(patient.name == name)
    }

    /// A JIS X 0208 run with an odd number of bytes (";3E": 山 and half a character) and a truncated escape
    /// sequence at the end: the import succeeds, each undecodable piece becomes U+FFFD, the rest is decoded
    /// and the value counts as converted (it is UTF-8 now; the raw bytes are sealed with the file).
    @Test func aMalformedISO2022NameImportsWithReplacementCharacters() async throws {
        let raw = Array("Yamada^".utf8) + [0x1B, 0x24, 0x42] + Array(";3E".utf8) + [0x1B, 0x28, 0x42] + Array("=".utf8) + [0x1B, 0x24]
        let dir = TempDir("medvault-charset")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        try Self.write(dir.sub("in/bad.dcm"), charset: ["", "ISO 2022 IR 87"], patientID: "JP-BAD",
                       rawName: raw.map { String(format: "%02x", $0) }.joined())
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("in")])
        let patient = try #require(try vault.listStudies().first?.patient)
        #expect(patient.characterSetConverted)
        #expect(patient.name == "Yamada^山\u{FFFD}=\u{FFFD}")
    }
}
