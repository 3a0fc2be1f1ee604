// The tamper-evident audit log: append-only segments under vault/audit/, one sealed record per action,
// each chained to the previous one by a keyed MAC, with the chain's head kept in audit/head so that
// removing records from the end is detected too. One chain across processes: appends hold audit/lock.
// See docs/audit.md.
public import VaultKeys
import VaultFormats
import VaultIO
public import Foundation
package import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// What one audit record says. Sealed on disk (it may name patients).
public struct AuditEvent: Codable, Sendable, Equatable {
    public var time: Date
    /// Account name, or the OS user for CLI actions.
    public var actor: String
    /// Account role, or "cli".
    public var role: String
    public var peerUID: UInt32?
    public var peerPID: Int32?
    public var action: AuditAction
    /// For an API request: what its route does with patient data, as the server states it. Nil in every
    /// other record, and in request records written before the field existed (the report then reads
    /// the path as those releases served it: `AuditRecordKind.legacyRequestKind`). The key `access` is
    /// written only when set (the synthesized `encodeIfPresent`), so other records keep their old shape.
    public var access: AuditAccess?
    public var outcome: AuditOutcome
    public var patientIDs: [String] = []
    public var studyUIDs: [String] = []
    public var seriesUIDs: [String] = []
    public var instanceUIDs: [String] = []
    public var instances: Int = 0
    public var bytes: Int64 = 0
    public var detail: String = ""

    public init(
        time: Date = Date(), actor: String, role: String, peerUID: UInt32? = nil, peerPID: Int32? = nil, action: AuditAction,
        outcome: AuditOutcome
    ) {
        self.time = time
        self.actor = actor
        self.role = role
        self.peerUID = peerUID
        self.peerPID = peerPID
        self.action = action
        self.outcome = outcome
    }
}

public struct AuditRecord: Sendable, Equatable {
    public let sequence: UInt64
    public let segment: String
    public let offset: Int
    public let event: AuditEvent
}

public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
    public let segment: String
    public let offset: Int
    /// The sequence number expected at that place.
    public let sequence: UInt64
    public let detail: String
    public var description: String { "\(segment) at byte \(offset) (record \(sequence)): \(detail)" }
}

public struct AuditVerifyReport: Sendable {
    public var records = 0
    public var segments = 0
    public var problems: [AuditProblem] = []
    /// Not tampering: what an interrupted append left (repairable: the next audited command repairs
    /// it) and the `audit.repair` records of earlier repairs.
    public var notices: [AuditProblem] = []
    public var ok: Bool { problems.isEmpty }
}

/// The append-only audit log in `audit/`: sealed records chained by a keyed MAC, and an authenticated
/// head. One value per vault directory and key pair; appends serialise on `audit/lock`.
package struct AuditLog: Sendable {
    package let directory: String
    /// Seals each record's body.
    let sealKey: SymmetricKey
    /// Keys the chain and the head.
    let macKey: SymmetricKey
    /// Concurrent appends from this process, written together (shared by copies of this value).
    package let group = AuditGroupCommit()

    package init(directory: String, sealKey: SymmetricKey, macKey: SymmetricKey) {
        self.directory = directory
        self.sealKey = sealKey
        self.macKey = macKey
    }

    private var auditLockPath: String { directory + "/lock" }
    private var auditHeadPath: String { directory + "/head" }

    package func chainMAC(previous: [UInt8], sequence: UInt64, body: [UInt8]) -> [UInt8] {
        let h = KeyedHasher(key: macKey)
        h.update(previous)
        h.update(AuditFormat.be64(sequence))
        h.update(body)
        return h.finalize()
    }

    package func headMAC(sequence: UInt64, mac: [UInt8]) -> [UInt8] {
        KeyedHasher.hash(Array("head".utf8) + AuditFormat.be64(sequence) + mac, key: macKey)
    }

    /// The chain's head as recorded in audit/head (0 and zeros for an empty log), if authentic.
    package func readAuditHead() -> (sequence: UInt64, mac: [UInt8])? {
        guard let data = FileManager.default.contents(atPath: auditHeadPath) else {
            return (0, [UInt8](repeating: 0, count: AuditFormat.macLength))
        }
        let b = Array(data)
        guard b.count == 8 + 64 else { return nil }
        let seq = AuditFormat.read64(b[0..<8]), mac = Array(b[8..<40])
        guard constantTimeEquals(Array(b[40..<72]), headMAC(sequence: seq, mac: mac)) else { return nil }
        return (seq, mac)
    }

    /// Appends one record, durably (fdatasync of its segment), before returning. Records that other
    /// threads of this process append meanwhile are written with it, in one write and one sync (group
    /// commit, `AuditGroupCommit`): a slow disk costs each request one sync, not one per request queued
    /// before it.
    package func append(_ event: AuditEvent) throws {
        try append(event, segmentLimit: AuditFormat.segmentLimit)
    }

    package func append(_ event: AuditEvent, segmentLimit: Int) throws {
        try group.append(event) { events in
            let lock = try WriterLock(path: auditLockPath, onWait: {})
            defer { withExtendedLifetime(lock) {} }
            let head = try repairAuditTailLocked(segmentLimit: segmentLimit)
            _ = try appendLocked(events, after: head, segmentLimit: segmentLimit)
        }
    }

    /// Seals `events` as the records after `head`, in order, writes them (one write and one fdatasync
    /// per segment they go to), then replaces audit/head atomically. A kill or a full disk between the
    /// two leaves authentic records the head does not know yet: the next writer adopts them
    /// (`repairAuditTailLocked`). Caller holds audit/lock.
    private func appendLocked(_ events: [AuditEvent], after head: (sequence: UInt64, mac: [UInt8]), segmentLimit: Int) throws -> (sequence: UInt64, mac: [UInt8]) {
        var head = head
        // The newest segment, or a new one when it would grow past the limit. Segments are never rewritten.
        let segments = auditSegments()
        var name = segments.last ?? AuditFormat.segmentName(1)
        var size = segments.last.flatMap { FileIO.fileSize(directory + "/" + $0) } ?? 0
        var hasSegment = !segments.isEmpty
        var writes: [(name: String, bytes: [UInt8])] = []
        for event in events {
            let sequence = head.sequence + 1
            var plain = try JSONFiles.encode(event, "the audit record")
            defer { wipe(&plain) }
            let body = AEAD.seal(plain, key: sealKey, associatedData: Array("medvault.v1.audit|".utf8) + AuditFormat.be64(sequence))
            let mac = chainMAC(previous: head.mac, sequence: sequence, body: body)
            let record = AuditFormat.magic + AuditFormat.be64(sequence) + AuditFormat.be32(UInt32(body.count)) + body + mac
            if hasSegment && size + Int64(record.count) > segmentLimit {
                name = AuditFormat.segmentName((Int(name.dropFirst(8).prefix(6)) ?? segments.count) + 1)
                size = 0
            }
            hasSegment = true
            if writes.last?.name == name { writes[writes.count - 1].bytes += record } else { writes.append((name, record)) }
            size += Int64(record.count)
            head = (sequence, mac)
        }
        for write in writes { try appendDurably(write.bytes, to: write.name) }
        try writeAuditHead(sequence: head.sequence, mac: head.mac)
        return head
    }

    /// One append to a segment, made durable (fdatasync; and the directory's fsync for a new segment).
    private func appendDurably(_ bytes: [UInt8], to name: String) throws {
        let path = directory + "/" + name
        let isNew = !FileIO.exists(path)
        let seg = try FileIO.Descriptor.open(path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        let before = FileIO.fileSize(path) ?? 0
        do { try seg.writeAll(bytes) } catch {
            // A short write (full disk) would leave a torn tail: take it back now if we can (the next
            // writer would truncate it anyway).
            _ = ftruncate(seg.fd, off_t(before))
            _ = fdatasync(seg.fd)
            try? seg.close()
            throw error
        }
        try seg.dataSync()
        try seg.close()
        if isNew { try FileIO.fsyncDirectory(directory) }
    }

    /// audit/head, replaced atomically (temp file, fsync, rename): a failed write leaves the old head,
    /// never a 0-byte or torn one. The directory is not fsynced after the rename: a power loss may
    /// bring back the previous head, which the next writer repairs by adopting the (durable) records
    /// after it, as after a kill between the record and the head (docs/audit.md, "Durability").
    private func writeAuditHead(sequence: UInt64, mac: [UInt8]) throws {
        try FileIO.writeAtomically(
            AuditFormat.be64(sequence) + mac + headMAC(sequence: sequence, mac: mac), to: auditHeadPath, tmpDirectory: directory, syncDirectory: false)
    }

    /// Under audit/lock: finds what an interrupted append left past the head — complete, authentic
    /// records the head does not know (adopted: the head catches up) or a partial record (truncated) —
    /// repairs it and appends an `audit.repair` record saying what was found. Returns the head to
    /// append after. Throws if the head fails authentication (other than the 0-byte head an older
    /// release left when the disk filled during the first record) or the tail is not a crash artifact.
    @discardableResult
    package func repairAuditTailLocked(segmentLimit: Int = AuditFormat.segmentLimit) throws -> (sequence: UInt64, mac: [UInt8]) {
        for name in FileIO.list(directory) where name.hasSuffix(".tmp") {
            try? FileIO.unlink(directory + "/" + name)  // an interrupted head replacement
        }
        let zeroHead = FileIO.fileSize(auditHeadPath) == 0
        guard let head = zeroHead ? (0, [UInt8](repeating: 0, count: AuditFormat.macLength)) : readAuditHead() else {
            throw VaultError.catalog("audit/head fails authentication; run `medvault audit verify`")
        }
        let tail = inspectAuditTail(head: head)
        var found: [String] = []
        var newHead = head
        switch tail {
        case .clean:
            if !zeroHead { return head }
        case .unknown:
            // The head's record is not where the log ends (records removed, or an older tampering):
            // nothing a crash explains; `audit verify` reports it. Append as before.
            return head
        case .repairable(let adopted, let torn, let last):
            if zeroHead && last.sequence > 1 {
                throw VaultError.catalog("audit/head is empty but the log holds \(last.sequence) records; run `medvault audit verify`")
            }
            if let t = torn {
                let fd = Glibc.open(directory + "/" + t.segment, O_WRONLY)
                guard fd >= 0 else { throw IOFailure(operation: "open", path: directory + "/" + t.segment, errno: errno) }
                defer { _ = close(fd) }
                guard ftruncate(fd, off_t(t.offset)) == 0, fdatasync(fd) == 0 else {
                    throw IOFailure(operation: "truncate", path: directory + "/" + t.segment, errno: errno)
                }
                found.append("truncated a partial record of \(t.bytes) bytes at byte \(t.offset) of \(t.segment) (an append interrupted while writing)")
            }
            if let a = adopted {
                found.append(
                    a.lowerBound == a.upperBound
                        ? "adopted record \(a.lowerBound), complete and authentic but not yet in audit/head (an append interrupted before the head was updated; its action may not have completed)"
                        : "adopted records \(a.lowerBound)…\(a.upperBound), complete and authentic but not yet in audit/head (appends interrupted before the head was updated; their actions may not have completed)")
            }
            newHead = last
        }
        if zeroHead { found.insert("audit/head was an empty file (a full disk while the first record was written)", at: 0) }
        // The repair record goes after the adopted records and before the head moves: one head update
        // acknowledges both, so an adoption is never silent (a kill before it leaves the same repairable tail).
        var event = AuditEvent(actor: currentOSUser(), role: "cli", peerUID: getuid(), peerPID: getpid(), action: .auditRepair, outcome: .ok)
        event.detail = found.joined(separator: "; ")
        return try appendLocked([event], after: newHead, segmentLimit: segmentLimit)
    }

    package enum AuditTail {
        case clean
        /// The head's record was not found at the end of the log: not a crash artifact.
        case unknown
        /// `adopted`: sequence numbers of authentic records past the head; `torn`: a partial record
        /// at the very end; `last`: the head once repaired.
        case repairable(adopted: ClosedRange<UInt64>?, torn: (segment: String, offset: Int, bytes: Int)?, last: (sequence: UInt64, mac: [UInt8]))
    }

    /// Looks for the head's record in the newest segments (the log after it can only be what one or
    /// more interrupted appends left) and classifies what follows it.
    package func inspectAuditTail(head: (sequence: UInt64, mac: [UInt8])) -> AuditTail {
        let segments = auditSegments()
        guard !segments.isEmpty else { return head.sequence == 0 ? .clean : .unknown }
        // Fast path, every append: the log ends with the head's MAC (or is empty at sequence 0).
        for name in segments.reversed() {
            let path = directory + "/" + name
            guard let size = FileIO.fileSize(path) else { break }
            if size == 0 { continue }
            if head.sequence > 0, size >= 32, let d = try? FileIO.Descriptor.open(path, flags: O_RDONLY) {
                var last = [UInt8](repeating: 0, count: 32)
                let n = last.withUnsafeMutableBytes { pread(d.fd, $0.baseAddress, 32, off_t(size - 32)) }
                try? d.close()
                if n == 32 && last == head.mac { return .clean }
            }
            break
        }
        if head.sequence == 0, segments.allSatisfy({ FileIO.fileSize(directory + "/" + $0) == 0 }) { return .clean }
        func load(_ name: String) -> [UInt8] { Array(FileManager.default.contents(atPath: directory + "/" + name) ?? Data()) }
        // Where the head's record ends: (segment index, offset).
        var start: (index: Int, offset: Int)?
        if head.sequence == 0 {
            start = (0, 0)
        } else {
            // Newest segments first; an interrupted append can have opened at most one new segment per record.
            for i in stride(from: segments.count - 1, through: max(0, segments.count - 3), by: -1) {
                let bytes = load(segments[i])
                var offset = 0
                while bytes.count - offset >= AuditFormat.headerLength, Array(bytes[offset..<offset + 4]) == AuditFormat.magic {
                    let seq = AuditFormat.read64(bytes[offset + 4..<offset + 12])
                    let length = Int(AuditFormat.read32(bytes[offset + 12..<offset + 16]))
                    let end = offset + AuditFormat.headerLength + length + AuditFormat.macLength
                    guard length <= AuditFormat.maxBody, end <= bytes.count else { break }
                    if seq == head.sequence, constantTimeEquals(Array(bytes[end - AuditFormat.macLength..<end]), head.mac) {
                        start = (i, end)
                    }
                    offset = end
                }
                if start != nil { break }
            }
        }
        guard let start else { return .unknown }
        var previous = head.mac
        var expected = head.sequence + 1
        var firstAdopted: UInt64?
        func done(torn: (segment: String, offset: Int, bytes: Int)?) -> AuditTail {
            let adopted = firstAdopted.map { $0...(expected - 1) }
            if adopted == nil && torn == nil { return .clean }
            return .repairable(adopted: adopted, torn: torn, last: (expected - 1, previous))
        }
        for i in start.index..<segments.count {
            let bytes = load(segments[i])
            var offset = i == start.index ? start.offset : 0
            while offset < bytes.count {
                let rest = bytes.count - offset
                let isLastSegment = i == segments.count - 1
                guard rest >= AuditFormat.headerLength else {
                    let m = min(4, rest)
                    return isLastSegment && Array(bytes[offset..<offset + m]) == Array(AuditFormat.magic.prefix(m))
                        ? done(torn: (segments[i], offset, rest)) : .unknown
                }
                guard Array(bytes[offset..<offset + 4]) == AuditFormat.magic else { return .unknown }
                let seq = AuditFormat.read64(bytes[offset + 4..<offset + 12])
                let length = Int(AuditFormat.read32(bytes[offset + 12..<offset + 16]))
                let end = offset + AuditFormat.headerLength + length + AuditFormat.macLength
                guard seq == expected, length <= AuditFormat.maxBody else { return .unknown }
                guard end <= bytes.count else { return isLastSegment ? done(torn: (segments[i], offset, rest)) : .unknown }
                let body = Array(bytes[offset + AuditFormat.headerLength..<offset + AuditFormat.headerLength + length])
                let mac = Array(bytes[end - AuditFormat.macLength..<end])
                guard constantTimeEquals(mac, chainMAC(previous: previous, sequence: seq, body: body)),
                    (try? AEAD.open(body, key: sealKey, associatedData: Array("medvault.v1.audit|".utf8) + AuditFormat.be64(seq))) != nil
                else { return .unknown }
                if firstAdopted == nil { firstAdopted = seq }
                previous = mac
                expected = seq + 1
                offset = end
            }
        }
        return done(torn: nil)
    }

    package func auditSegments() -> [String] {
        FileIO.list(directory).filter { $0.hasPrefix("segment-") && $0.hasSuffix(".log") }.sorted()
    }

    /// Reads and checks the whole log. Problems name the segment, byte offset and record.
    package func read() -> (records: [AuditRecord], report: AuditVerifyReport) {
        var report = AuditVerifyReport()
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let segments = auditSegments()
        report.segments = segments.count
        let interrupted = interruptedAppend(segments: segments)
        report.notices += interrupted.notices
        var chain = ChainWalk()
        for (i, name) in segments.enumerated() {
            readSegment(name, number: i + 1, stoppingAt: interrupted.tornAt, decoder: decoder, chain: &chain, report: &report)
        }
        report.records = chain.records.count
        // A head that lags only by what an interrupted append left is repaired by the next append: not a problem.
        if let r = interrupted.repairableHead, r == chain.expected - 1 { return (chain.records, report) }
        report.problems += headProblems(after: chain, segments: segments)
        return (chain.records, report)
    }

    /// Where a walk along the chain is: the records read so far, the MAC the next record chains from,
    /// and the sequence number expected next.
    private struct ChainWalk {
        var records: [AuditRecord] = []
        var previous = [UInt8](repeating: 0, count: AuditFormat.macLength)
        var expected: UInt64 = 1
    }

    /// What an interrupted append may have left past an authentic head (or an empty head file from a
    /// full disk at the first record), as notices: repairable, not tampering. `tornAt`: where a partial
    /// record starts (reading stops there); `repairableHead`: the sequence the log ends at once repaired.
    private func interruptedAppend(
        segments: [String]
    ) -> (notices: [AuditProblem], tornAt: (segment: String, offset: Int)?, repairableHead: UInt64?) {
        var notices: [AuditProblem] = []
        let zeroHead = FileIO.fileSize(auditHeadPath) == 0
        var tornAt: (segment: String, offset: Int)?
        var repairableHead: UInt64?
        if let head = zeroHead ? (0, [UInt8](repeating: 0, count: AuditFormat.macLength)) : readAuditHead(),
            case .repairable(let adopted, let torn, let last) = inspectAuditTail(head: head), !zeroHead || last.sequence <= 1
        {
            if let t = torn {
                tornAt = (t.segment, t.offset)
                notices.append(.init(
                    segment: t.segment, offset: t.offset, sequence: last.sequence + 1,
                    detail: "interrupted append: a partial record of \(t.bytes) bytes at the end (not tampering; the next audited command truncates it and records the repair)"))
            }
            if let a = adopted {
                notices.append(.init(
                    segment: segments.last ?? "head", offset: 0, sequence: a.lowerBound,
                    detail: "interrupted append: record(s) \(a.lowerBound)…\(a.upperBound) complete and authentic but not yet in audit/head (not tampering; the next audited command adopts them and records the repair)"))
            }
            repairableHead = last.sequence
        } else if zeroHead, case .clean = inspectAuditTail(head: (0, [UInt8](repeating: 0, count: AuditFormat.macLength))) {
            repairableHead = 0
        }
        if zeroHead, repairableHead != nil {
            notices.append(.init(segment: "head", offset: 0, sequence: 1, detail: "audit/head is an empty file (a full disk during the first record; the next audited command rewrites it and records the repair)"))
        }
        return (notices, tornAt, repairableHead)
    }

    /// Walks the records of one segment along the chain: each must be at a record boundary, carry the
    /// next sequence number, chain from the previous MAC and open with the seal key. A problem names
    /// the place; the walk goes on past a bad MAC or body (so that one edit does not hide the rest) and
    /// stops at a broken boundary or at the partial record an interrupted append left (`tornAt`).
    private func readSegment(
        _ name: String, number: Int, stoppingAt tornAt: (segment: String, offset: Int)?, decoder: JSONDecoder,
        chain: inout ChainWalk, report: inout AuditVerifyReport
    ) {
        if name != AuditFormat.segmentName(number) {
            report.problems.append(.init(segment: name, offset: 0, sequence: chain.expected, detail: "segment numbering has a gap or an extra segment"))
        }
        let bytes = Array(FileManager.default.contents(atPath: directory + "/" + name) ?? Data())
        var offset = 0
        while offset < bytes.count {
            func problem(_ d: String) { report.problems.append(.init(segment: name, offset: offset, sequence: chain.expected, detail: d)) }
            if let t = tornAt, t.segment == name, t.offset == offset { break }
            guard bytes.count - offset >= AuditFormat.headerLength, Array(bytes[offset..<offset + 4]) == AuditFormat.magic else {
                problem(bytes.count - offset < AuditFormat.headerLength ? "truncated record" : "not a record boundary (bytes inserted, removed or altered)")
                break
            }
            let seq = AuditFormat.read64(bytes[offset + 4..<offset + 12])
            let length = Int(AuditFormat.read32(bytes[offset + 12..<offset + 16]))
            let end = offset + AuditFormat.headerLength + length + AuditFormat.macLength
            guard length <= AuditFormat.maxBody, end <= bytes.count else { problem("truncated record"); break }
            let body = Array(bytes[offset + AuditFormat.headerLength..<offset + AuditFormat.headerLength + length])
            let mac = Array(bytes[end - AuditFormat.macLength..<end])
            if seq != chain.expected {
                problem(seq > chain.expected ? "records \(chain.expected)…\(seq - 1) are missing" : "record \(seq) is out of order or repeated")
            }
            if !constantTimeEquals(mac, chainMAC(previous: chain.previous, sequence: seq, body: body)) {
                problem("chain MAC does not verify (record edited, inserted, removed or reordered)")
            }
            if let plain = try? AEAD.open(body, key: sealKey, associatedData: Array("medvault.v1.audit|".utf8) + AuditFormat.be64(seq)),
                let event = try? decoder.decode(AuditEvent.self, from: Data(plain))
            {
                chain.records.append(AuditRecord(sequence: seq, segment: name, offset: offset, event: event))
                if event.action == .auditRepair {
                    report.notices.append(.init(segment: name, offset: offset, sequence: seq, detail: "repaired after an interrupted append: " + event.detail))
                }
            } else {
                problem("record body fails authentication")
            }
            chain.previous = mac
            chain.expected = seq + 1
            offset = end
        }
    }

    /// What is wrong with audit/head once the chain has been walked: it must authenticate and name the
    /// last record (else records were removed from the end, or added behind the head's back).
    private func headProblems(after chain: ChainWalk, segments: [String]) -> [AuditProblem] {
        guard let head = readAuditHead() else {
            return [.init(segment: "head", offset: 0, sequence: chain.expected, detail: "audit/head fails authentication")]
        }
        guard head.sequence != chain.expected - 1 || !constantTimeEquals(head.mac, chain.previous) else { return [] }
        return [.init(
            segment: segments.last ?? "head", offset: 0, sequence: chain.expected,
            detail: head.sequence > chain.expected - 1
                ? "records \(chain.expected)…\(head.sequence) were removed from the end of the log"
                : "the log has records the head does not know (head at \(head.sequence))")]
    }
}

/// The OS account running this process, for CLI audit records.
public func currentOSUser() -> String {
    if let pw = getpwuid(getuid()), let name = pw.pointee.pw_name { return String(cString: name) }
    return "uid \(getuid())"
}

/// Group commit for the appends of one process. The first caller to find no write in progress takes
/// every record queued so far and writes them (under audit/lock, as one batch); the others wait for
/// the batch that holds their record and get its outcome. Every caller returns only once its own
/// record is durable, or with the error that kept it from being so.
package final class AuditGroupCommit: @unchecked Sendable {
    private let condition = NSCondition()
    /// Batches written so far (each one lock, one write and one sync per segment).
    package private(set) var batchesWritten = 0
    private var queued: [(ticket: UInt64, event: AuditEvent)] = []
    private var outcomes: [UInt64: Result<Void, any Error>] = [:]
    private var writing = false
    private var nextTicket: UInt64 = 0

    func append(_ event: AuditEvent, write: ([AuditEvent]) throws -> Void) throws {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        queued.append((ticket, event))
        while true {
            if let outcome = outcomes.removeValue(forKey: ticket) {
                condition.unlock()
                return try outcome.get()
            }
            if writing {
                condition.wait()
                continue
            }
            writing = true
            let batch = queued
            queued.removeAll()
            condition.unlock()
            let outcome = Result { try write(batch.map(\.event)) }
            condition.lock()
            for item in batch { outcomes[item.ticket] = outcome }
            batchesWritten += 1
            writing = false
            condition.broadcast()
        }
    }
}
