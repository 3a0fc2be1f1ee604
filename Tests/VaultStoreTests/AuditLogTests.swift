import VaultAudit
import Foundation
import Testing
import TestSupport
@testable import VaultStore

@Suite struct AuditLogTests {
    func event(_ i: Int) -> AuditEvent {
        var e = AuditEvent(actor: "dr.meier", role: "radiologist", peerUID: 1000, peerPID: Int32(4000 + i), action: .export, outcome: .ok)
        e.patientIDs = ["MRN0012345"]
        e.studyUIDs = ["1.2.826.0.1.3680043.10.999.1.\(i)"]
        e.bytes = Int64(i * 1000)
        return e
    }

    /// A vault with `n` audit records in one segment (or several, with a small limit).
    func logged(_ dir: TempDir, _ n: Int, segmentLimit: Int = 4 << 20) throws -> Vault {
        let (vault, _) = try makeVault(dir)
        for i in 1...n { try vault.audit(event(i), segmentLimit: segmentLimit) }
        return vault
    }

    /// Byte ranges of each record in a segment.
    func recordRanges(_ path: String) -> [Range<Int>] {
        let b = readBytes(path)
        var out: [Range<Int>] = [], o = 0
        while o + 16 <= b.count {
            let len = Int(b[(o + 12)..<(o + 16)].reduce(0) { $0 << 8 | UInt32($1) })
            out.append(o..<(o + 16 + len + 32))
            o += 16 + len + 32
        }
        return out
    }

    @Test func concurrentAppendsShareSyncsAndEveryRecordIsChainedInOrder() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let before = vault.readAudit().records.count
        let batchesBefore = vault.auditLog.group.batchesWritten
        let threads = 8, each = 40
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<each { try? vault.audit(event(t * 1000 + i)) }
        }
        let (records, report) = vault.readAudit()
        #expect(report.ok, "\(report.problems)")
        #expect(records.count == before + threads * each)
        #expect(records.map(\.sequence) == Array(1...UInt64(records.count)))
        // Every append came back (none failed), and each thread's records are in its own order.
        let mine = records.dropFirst(before).map { Int($0.event.peerPID ?? 0) - 4000 }
        for t in 0..<threads {
            let own = mine.filter { $0 / 1000 == t }
            #expect(own == (0..<each).map { t * 1000 + $0 })
        }
        // Fewer batches than records: appends that met a write in progress were written with the next one.
        let batches = vault.auditLog.group.batchesWritten - batchesBefore
        #expect(batches < threads * each, "\(batches) batches for \(threads * each) records")
    }

    @Test func recordsReadBackSealedAndChained() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try logged(dir, 5)
        let (records, report) = vault.readAudit()
        #expect(report.ok, "\(report.problems)")
        #expect(records.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(records[2].event.studyUIDs == event(3).studyUIDs)
        #expect(records[2].event.peerPID == 4003 && records[2].event.bytes == 3000 && records[2].event.patientIDs == ["MRN0012345"])
        // Sealed: the patient ID and study UID are not readable in the log.
        for f in allFiles(under: vault.layout.audit) {
            #expect(!fileContains(f, Array("MRN0012345".utf8)))
            #expect(!fileContains(f, Array("1.2.826.0.1.3680043.10.999.1.3".utf8)))
        }
    }

    @Test func rotationKeepsOneChain() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try logged(dir, 12, segmentLimit: 1500)
        let (records, report) = vault.readAudit()
        #expect(report.ok, "\(report.problems)")
        #expect(report.segments > 2)
        #expect(records.count == 12)
    }

    @Test(arguments: ["edit", "remove", "reorder", "insert", "truncate", "drop-last"])
    func everyKindOfTamperingIsFoundAndPlaced(kind: String) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try logged(dir, 5)
        let seg = vault.layout.audit + "/segment-000001.log"
        var b = readBytes(seg)
        let r = recordRanges(seg)
        #expect(r.count == 5)
        switch kind {
        case "edit": b[r[2].lowerBound + 40] ^= 1
        case "remove": b.removeSubrange(r[1])
        case "reorder": b = Array(b[r[0]]) + Array(b[r[2]]) + Array(b[r[1]]) + Array(b[r[3]]) + Array(b[r[4]])
        case "insert": b = Array(b[r[0]]) + Array(b[r[1]]) + Array(b[r[1]]) + Array(b[r[2].lowerBound...])
        case "truncate": b = Array(b[..<(r[4].lowerBound + 20)])
        default: b = Array(b[..<r[4].lowerBound])
        }
        try writeBytes(seg, b)
        let report = vault.readAudit().report
        #expect(!report.ok, "\(kind) not detected")
        let first = try #require(report.problems.first)
        switch kind {
        case "edit": #expect(first.sequence == 3 && first.offset == r[2].lowerBound)
        case "remove": #expect(first.sequence == 2 && first.detail.contains("missing"))
        case "reorder", "insert": #expect(first.sequence == 2 || first.sequence == 3)
        case "truncate": #expect(first.detail.contains("truncated") && first.sequence == 5)
        default: #expect(first.detail.contains("removed from the end"))
        }
        // Appending refuses nothing, but the damage stays visible.
        #expect(!vault.readAudit().report.ok)
    }

    @Test func concurrentWritersKeepOneChain() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let other = try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        DispatchQueue.concurrentPerform(iterations: 40) { i in
            try? (i % 2 == 0 ? vault : other).audit(event(i))
        }
        let (records, report) = vault.readAudit()
        #expect(report.ok, "\(report.problems)")
        #expect(records.count == 40)
    }
}
