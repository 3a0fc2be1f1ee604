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
    static func write(_ path: String, charset: [String], patientID: String) throws {
        let script = """
            import sys, json, pydicom
            from pydicom.dataset import Dataset, FileMetaDataset
            from pydicom.uid import generate_uid, ExplicitVRLittleEndian
            path, charset, pid, name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
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
        let r = try run("/usr/bin/env", ["python3", "-c", script, path, charsets, patientID, name])
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
        try vault.importFiles([dir.sub("in")])
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
        try vault.importFiles([dir.sub("in")])
        let patient = try #require(try vault.listStudies().first?.patient)
        let found = try await Self.search(vault, dir, "PatientName=*%E5%B1%B1%E7%94%B0*")
        #expect(patient.characterSetConverted)
        #expect(patient.name == Self.name)
        #expect(found == ["JP-JIS"])
    }
}
