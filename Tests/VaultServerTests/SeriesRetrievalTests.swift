// WADO-RS of whole series (issue 12): several instances decrypted at once, sent in order, with a
// bounded read-ahead. Real vaults, real blobs of both formats, bytes compared with the originals.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TestSupport
import VaultFormats
import VaultIO
@testable import VaultServer
@testable import VaultStore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SeriesRetrievalTests {
    typealias Served = ServerInProcessTests.Served

    /// Two new series in the served vault: `small` of 40 instances of 64² (≈ 9 KB, one chunk each) and
    /// `large` of 3 slices of 512² (≈ 0.5 MB, 9 chunks each). Every other small instance and the middle
    /// large one are rewritten as format-1 blobs (an earlier release's), same id and key.
    final class Series: Sendable {
        let served: Served
        let small: Corpus, large: Corpus

        init(_ name: String) throws {
            served = try Served()
            let dir = served.dir
            small = Corpus.generate(["ct-series", dir.sub("\(name)-small"), "--slices", "40", "--size", "64", "--patient-id", "SER-0001"])
            large = Corpus.generate(["ct-series", dir.sub("\(name)-large"), "--slices", "3", "--size", "512", "--patient-id", "SER-0002"])
            for c in [small, large] { try FileManager.default.removeItem(atPath: c.root + "/manifest.json") }
            let summary = try served.vault.importFiles([small.root, large.root])
            try #require(summary.count("imported") == 43 && !summary.anyFailed)
            for (i, item) in try items(small).enumerated() where i % 2 == 1 { try rewriteAsFormatOne(item) }
            try rewriteAsFormatOne(try items(large)[1])
        }

        var vault: Vault { served.vault }

        /// The series' instances in the answer's (catalog) order.
        func items(_ c: Corpus) throws -> [RetrievableInstance] {
            let f = try #require(c.valid.first)
            return try vault.instancesForRetrieval(study: f.study_uid ?? "", series: f.series_uid ?? "", sopInstanceUIDs: true)
        }

        /// The original files in the answer's order.
        func originals(_ c: Corpus) throws -> [[UInt8]] {
            let bySOP = Dictionary(uniqueKeysWithValues: c.valid.map { ($0.sop_uid ?? "", readBytes(c.path($0))) })
            return try items(c).map { try #require(bySOP[$0.resolved.sopInstanceUID ?? ""]) }
        }

        func path(_ c: Corpus) throws -> String {
            let f = try #require(c.valid.first)
            return "/dicom-web/studies/\(f.study_uid ?? "")/series/\(f.series_uid ?? "")"
        }

        func blobPath(_ item: RetrievableInstance) throws -> String {
            vault.layout.blob(try #require(BlobID(hex: item.resolved.row.blobID)))
        }

        private func rewriteAsFormatOne(_ item: RetrievableInstance) throws {
            let r = item.resolved
            let id = try #require(BlobID(hex: r.row.blobID))
            let key = try vault.patientKey(ref: r.patientRef, wrapped: r.wrappedPatientKey)
            var clear: [UInt8] = []
            try vault.readInstance(r) { clear += $0 }
            let dir = served.dir
            try writeBytes(dir.sub("clear"), clear)
            _ = try BlobCodec.encrypt(
                source: try FileIO.Descriptor.open(dir.sub("clear"), flags: O_RDONLY), to: dir.sub("v1"), id: id, patientKey: key,
                contentKey: vault.keyring.contentMAC, version: BlobFormat.streamVersion)
            try FileManager.default.removeItem(atPath: dir.sub("clear"))
            try FileIO.rename(dir.sub("v1"), vault.layout.blob(id))
        }

        /// Flips one byte of the blob, `at` bytes from its end.
        func damage(_ item: RetrievableInstance, at fromEnd: Int) throws {
            let path = try blobPath(item)
            var bytes = readBytes(path)
            bytes[bytes.count - fromEnd] ^= 0x40
            try writeBytes(path, bytes)
        }
    }

    /// Takes the whole body from a retrieval, `pause` between takes (a slow client).
    static func drain(_ r: OrderedRetrieval, pause: UInt64 = 0) async throws -> [UInt8] {
        var out: [UInt8] = []
        while let buffers = try await r.next() {
            for b in buffers { out += b.readableBytesView }
            if pause > 0 { try await Task.sleep(nanoseconds: pause) }
        }
        return out
    }

    @Test func seriesOfManySmallAndOfFewLargeInstancesComeBackByteIdenticalInOrder() async throws {
        let t = try Series("order")
        #expect(Array(readBytes(try t.blobPath(try t.items(t.small)[1]))[8..<10]) == [0, 1])
        #expect(Array(readBytes(try t.blobPath(try t.items(t.small)[0]))[8..<10]) == [0, 2])
        try await t.served.app.test(.live) { client in
            for c in [t.small, t.large] {
                let path = try t.path(c)
                try await client.execute(uri: path, method: .get, headers: ServerInProcessTests.bearer(t.served.rad)) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentLength] == "\(response.body.readableBytes)")
                    let parts = try Multipart.parts(response)
                    #expect(parts.allSatisfy { $0.contentType == "application/dicom" })
                    #expect(parts.map(\.body) == (try t.originals(c)), "\(path)")
                }
                let record = try #require(t.served.requests(path).last)
                #expect(record.outcome == .ok && record.instances == c.valid.count)
                #expect(record.bytes == (try t.originals(c)).reduce(Int64(0)) { $0 + Int64($1.count) })
            }
        }
    }

    /// A blob altered in the middle of a series stops the answer there: everything before it arrives,
    /// nothing of the altered chunk does, and the error is the blob's.
    @Test(arguments: [false, true]) func aDamagedBlobMidSeriesStopsTheAnswer(large: Bool) async throws {
        let t = try Series(large ? "damaged-large" : "damaged-small")
        let c = large ? t.large : t.small
        let items = try t.items(c), originals = try t.originals(c)
        let k = items.count / 2
        // Large: a byte of the fifth of nine chunks (of a format-1 blob); small: the only chunk (format 2).
        try t.damage(items[k], at: large ? 4 * 65_553 + 100 : 100)
        let retrieval = OrderedRetrieval(try t.vault.retrievalSource(items), boundary: "b")
        let parts = await retrieval.layout()
        var received: [UInt8] = []
        await #expect(throws: BlobError.tampered) {
            while let buffers = try await retrieval.next() { for b in buffers { received += b.readableBytesView } }
        }
        var before: [UInt8] = []
        for i in 0..<k { before += parts.head(i) + originals[i] }
        try #require(received.count >= before.count)
        #expect(Array(received.prefix(before.count)) == before)
        // What follows, if anything, is the damaged instance's start, up to (not into) the damaged chunk.
        let rest = Array(received.dropFirst(before.count))
        if !rest.isEmpty {
            let head = parts.head(k)
            #expect(rest.starts(with: head))
            let sent = rest.count - head.count
            #expect(sent >= 0 && Array(rest.dropFirst(head.count)) == Array(originals[k].prefix(max(0, sent))))
            #expect(large && sent <= 4 * 65_536)
        }
        // Over HTTP: the answer ends short of its Content-Length (the connection is closed).
        try await t.served.app.test(.live) { client in
            let path = try t.path(c)
            await #expect(throws: (any Error).self) {
                try await client.execute(uri: path, method: .get, headers: ServerInProcessTests.bearer(t.served.rad)) { response in
                    #expect(response.body.readableBytes < Int(response.headers[.contentLength] ?? "") ?? 0)
                    throw CancellationError()
                }
            }
        }
        // A new connection (the test client's one was cut): the server goes on answering.
        try await t.served.app.test(.live) { client in
            try await client.execute(uri: try t.path(large ? t.small : t.large), method: .get, headers: ServerInProcessTests.bearer(t.served.rad)) {
                #expect($0.status == .ok)
            }
        }
    }

    /// However many and however large the instances, and however slow the client, the clear bytes
    /// waiting for it stay within the read-ahead's bound; the body is still the originals in order.
    @Test func readAheadIsBoundedWhateverTheSeriesAndTheClient() async throws {
        let t = try Series("bounded")
        let limits = ReadAhead(workers: 2, instances: 3, bytesPerInstance: 128 << 10, segment: 64 << 10)
        for (c, pause) in [(t.large, UInt64(2_000_000)), (t.small, 500_000), (t.large, 0), (t.small, 0)] {
            let items = try t.items(c), originals = try t.originals(c)
            let retrieval = OrderedRetrieval(try t.vault.retrievalSource(items), boundary: "bound", limits: limits)
            let parts = await retrieval.layout()
            let body = try await Self.drain(retrieval, pause: pause)
            #expect(body.count == parts.contentLength)
            var expected: [UInt8] = []
            for i in items.indices { expected += parts.head(i) + originals[i] + parts.trailer(i) }
            #expect(body == expected)
            #expect(retrieval.highWaterMark > 0 && retrieval.highWaterMark <= limits.bound, "high water \(retrieval.highWaterMark)")
        }
        // A large series with a slow client: far less waits than the series holds.
        let total = try t.originals(t.large).reduce(0) { $0 + $1.count }
        #expect(limits.bound < total / 3)
    }

    /// Released unread (as a HEAD request drops its body), a retrieval stops its threads, which were
    /// waiting for room.
    @Test func aRetrievalReleasedUnreadStopsItsThreads() async throws {
        let t = try Series("released")
        let limits = ReadAhead(workers: 2, instances: 2, bytesPerInstance: 64 << 10, segment: 64 << 10)
        var retrieval: OrderedRetrieval? = OrderedRetrieval(try t.vault.retrievalSource(try t.items(t.large)), boundary: "b", limits: limits)
        let running = try #require(retrieval?.runningThreads)
        _ = await retrieval?.layout()
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(running() == 2)
        retrieval = nil
        var ended = false
        for _ in 0..<100 where !ended {
            try await Task.sleep(nanoseconds: 20_000_000)
            ended = running() == 0
        }
        #expect(ended)
    }
}
