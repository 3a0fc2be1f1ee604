// WADO-RS serves every instance as a PS3.10 stream (PS3.18 8.7.3.5.1): an instance stored without a
// Part 10 header (a bare dataset, as some archives hold them) gets a generated file meta in front of its
// unchanged bytes; an instance with a header, and `export`, stay byte-identical to the stored original.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultDICOM
@testable import VaultServer
@testable import VaultStore

@Suite struct Part10RetrievalTests {
    typealias Served = ServerInProcessTests.Served

    /// The file's bytes after its preamble, "DICM" and group 0002 (whose length is (0002,0000)'s value).
    static func bareDataset(_ part10: [UInt8]) throws -> [UInt8] {
        try #require(DICOMFileMeta.hasPart10Header(part10))
        try #require(part10[132..<140].elementsEqual([0x02, 0x00, 0x00, 0x00, 0x55, 0x4C, 0x04, 0x00]))
        let groupLength = (0..<4).reduce(0) { $0 | Int(part10[140 + $1]) << (8 * $1) }
        return Array(part10[(144 + groupLength)...])
    }

    /// Two slices of one series, 512×512 (larger than the first header read, so the meta is built from
    /// a prefix cut inside Pixel Data): the first imported without its Part 10 header, the second as is.
    @Test func aBareInstanceIsServedWithFileMetaAndTheRestAsStored() async throws {
        let s = try Served()
        let series = Corpus.generate(["ct-series", s.dir.sub("p10"), "--slices", "2", "--size", "512", "--patient-id", "P10-0001",
                                      "--patient-name", "Bare^Dataset"])
        let files = series.valid.sorted { $0.path < $1.path }
        try #require(files.count == 2)
        let original = try DICOMParser.parse(path: series.path(files[0]))
        let bare = try Self.bareDataset(readBytes(series.path(files[0])))
        let part10 = readBytes(series.path(files[1]))
        #expect(bare.count > 256 << 10)
        try FileManager.default.createDirectory(atPath: s.dir.sub("p10-input"), withIntermediateDirectories: true)
        try writeBytes(s.dir.sub("p10-input/bare.dcm"), bare)
        try writeBytes(s.dir.sub("p10-input/part10.dcm"), part10)
        let summary = try s.vault.importFiles([s.dir.sub("p10-input")])
        #expect(summary.count("imported") == 2 && !summary.anyFailed)
        #expect(try !DICOMParser.parse(bytes: bare).hasFileMeta)

        let study = try #require(files[0].study_uid), seriesUID = try #require(files[0].series_uid)
        let sop = try #require(files[0].sop_uid)
        let expectedMeta = DICOMFileMeta.build(
            sopClassUID: try #require(original[.sopClassUID]), sopInstanceUID: sop, transferSyntaxUID: original.transferSyntaxUID)
        let instancePath = "/dicom-web/studies/\(study)/series/\(seriesUID)/instances/\(sop)"
        let seriesPath = "/dicom-web/studies/\(study)/series/\(seriesUID)"
        try await s.app.test(.live) { client in
            try await client.execute(uri: instancePath, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentLength] == "\(response.body.readableBytes)")
                let parts = try Multipart.parts(response)
                let body = try #require(parts.first?.body)
                #expect(parts.count == 1 && parts[0].contentType == "application/dicom")
                #expect(body.prefix(132).elementsEqual([UInt8](repeating: 0, count: 128) + Array("DICM".utf8)))
                #expect(Array(body.prefix(expectedMeta.count)) == expectedMeta)
                #expect(Array(body.dropFirst(expectedMeta.count)) == bare)
                // Read back as a Part 10 stream: the meta names the instance and the syntax DCMTK detected.
                let served = try DICOMParser.parse(bytes: body)
                #expect(served.hasFileMeta && served.transferSyntaxUID == original.transferSyntaxUID)
                #expect(served.values == original.values)
            }
            try await client.execute(uri: seriesPath, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentLength] == "\(response.body.readableBytes)")
                let bodies = try Multipart.parts(response).map(\.body)
                #expect(bodies.count == 2)
                #expect(Set(bodies) == [expectedMeta + bare, part10])
            }
        }
        // The audit records the bytes sent, file meta included.
        #expect(s.requests(instancePath).last?.bytes == Int64(expectedMeta.count + bare.count))
        #expect(s.requests(seriesPath).last?.bytes == Int64(expectedMeta.count + bare.count + part10.count))
        // export is unchanged: the stored original, byte for byte.
        try s.vault.export(.instance(sop), to: s.dir.sub("exported"))
        #expect(readBytes(s.dir.sub("exported/\(study)/\(seriesUID)/\(sop).dcm")) == bare)
    }
}
