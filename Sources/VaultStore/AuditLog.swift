// The tamper-evident audit log: append-only segments under vault/audit/, one sealed record per action,
// each chained to the previous one by a keyed MAC, with the chain's head kept in audit/head so that
// removing records from the end is detected too. One chain across processes: appends hold audit/lock.
// See docs/audit.md.
public import Foundation
import VaultCrypto
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
    public var ok: Bool { problems.isEmpty }
}

/// Record framing (all integers big-endian):
///   magic "MVAR" (4) ‖ sequence u64 ‖ body length u32 ‖ body (AEAD box) ‖ MAC (32)
/// MAC = keyed BLAKE2b(auditMAC, previous MAC ‖ sequence ‖ body). The first record chains from 32 zero bytes.
/// audit/head = sequence u64 ‖ MAC (32) ‖ keyed BLAKE2b(auditMAC, "head" ‖ sequence ‖ MAC) (32).
enum AuditFormat {
    static let magic: [UInt8] = Array("MVAR".utf8)
    static let headerLength = 4 + 8 + 4
    static let macLength = 32
    static let segmentLimit = 4 << 20
    static let maxBody = 1 << 20

    static func segmentName(_ n: Int) -> String {
        let digits = String(n)
        return "segment-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".log"
    }

    static func be64(_ v: UInt64) -> [UInt8] { (0..<8).reversed().map { UInt8((v >> (UInt64($0) * 8)) & 0xFF) } }
    static func be32(_ v: UInt32) -> [UInt8] { (0..<4).reversed().map { UInt8((v >> (UInt32($0) * 8)) & 0xFF) } }
    static func read64(_ b: ArraySlice<UInt8>) -> UInt64 { b.reduce(0) { $0 << 8 | UInt64($1) } }
    static func read32(_ b: ArraySlice<UInt8>) -> UInt32 { b.reduce(0) { $0 << 8 | UInt32($1) } }
}

extension Vault {
    private var auditLockPath: String { layout.audit + "/lock" }
    private var auditHeadPath: String { layout.audit + "/head" }

    func chainMAC(previous: [UInt8], sequence: UInt64, body: [UInt8]) -> [UInt8] {
        let h = KeyedHasher(key: keyring.auditMAC)
        h.update(previous)
        h.update(AuditFormat.be64(sequence))
        h.update(body)
        return h.finalize()
    }

    func headMAC(sequence: UInt64, mac: [UInt8]) -> [UInt8] {
        KeyedHasher.hash(Array("head".utf8) + AuditFormat.be64(sequence) + mac, key: keyring.auditMAC)
    }

    /// The chain's head as recorded in audit/head (0 and zeros for an empty log), if authentic.
    func readAuditHead() -> (sequence: UInt64, mac: [UInt8])? {
        guard let data = FileManager.default.contents(atPath: auditHeadPath) else {
            return (0, [UInt8](repeating: 0, count: AuditFormat.macLength))
        }
        let b = Array(data)
        guard b.count == 8 + 64 else { return nil }
        let seq = AuditFormat.read64(b[0..<8]), mac = Array(b[8..<40])
        guard constantTimeEquals(Array(b[40..<72]), headMAC(sequence: seq, mac: mac)) else { return nil }
        return (seq, mac)
    }

    /// Appends one record, durably (fsync of the segment and of the head), before returning.
    public func audit(_ event: AuditEvent) throws {
        try audit(event, segmentLimit: AuditFormat.segmentLimit)
    }

    func audit(_ event: AuditEvent, segmentLimit: Int) throws {
        let lock = try WriterLock(path: auditLockPath, onWait: {})
        defer { withExtendedLifetime(lock) {} }
        guard let head = readAuditHead() else {
            throw VaultError.catalog("audit/head fails authentication; run `medvault audit verify`")
        }
        let sequence = head.sequence + 1
        var plain = try JSONFiles.encode(event, "the audit record")
        defer { wipe(&plain) }
        let body = AEAD.seal(plain, key: keyring.auditSeal, associatedData: Array("medvault.v1.audit|".utf8) + AuditFormat.be64(sequence))
        let mac = chainMAC(previous: head.mac, sequence: sequence, body: body)
        let record = AuditFormat.magic + AuditFormat.be64(sequence) + AuditFormat.be32(UInt32(body.count)) + body + mac

        // The newest segment, or a new one when it would grow past the limit. Segments are never rewritten.
        let segments = auditSegments()
        var name = segments.last ?? AuditFormat.segmentName(1)
        if let last = segments.last, let size = FileIO.fileSize(layout.audit + "/" + last),
            size + Int64(record.count) > segmentLimit
        {
            name = AuditFormat.segmentName((Int(last.dropFirst(8).prefix(6)) ?? segments.count) + 1)
        }
        let path = layout.audit + "/" + name
        let isNew = !FileIO.exists(path)
        let seg = try FileIO.Descriptor.open(path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        try seg.writeAll(record)
        try seg.dataSync()
        try seg.close()
        // The head is 72 bytes, rewritten in place: a write within one 512-byte sector is atomic on the
        // disks this runs on, and a torn head would fail its MAC and be reported, not trusted.
        let headIsNew = !FileIO.exists(auditHeadPath)
        let headFile = try FileIO.Descriptor.open(auditHeadPath, flags: O_WRONLY | O_CREAT, mode: 0o600)
        try headFile.writeAll(AuditFormat.be64(sequence) + mac + headMAC(sequence: sequence, mac: mac), at: 0)
        try headFile.dataSync()
        try headFile.close()
        if isNew || headIsNew { try FileIO.fsyncDirectory(layout.audit) }
    }

    func auditSegments() -> [String] {
        FileIO.list(layout.audit).filter { $0.hasPrefix("segment-") && $0.hasSuffix(".log") }.sorted()
    }

    /// Reads and checks the whole log. Problems name the segment, byte offset and record.
    public func readAudit() -> (records: [AuditRecord], report: AuditVerifyReport) {
        var report = AuditVerifyReport()
        var records: [AuditRecord] = []
        var previous = [UInt8](repeating: 0, count: AuditFormat.macLength)
        var expected: UInt64 = 1
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let segments = auditSegments()
        report.segments = segments.count
        for (i, name) in segments.enumerated() {
            if name != AuditFormat.segmentName(i + 1) {
                report.problems.append(.init(segment: name, offset: 0, sequence: expected, detail: "segment numbering has a gap or an extra segment"))
            }
            let bytes = Array(FileManager.default.contents(atPath: layout.audit + "/" + name) ?? Data())
            var offset = 0
            while offset < bytes.count {
                func problem(_ d: String) { report.problems.append(.init(segment: name, offset: offset, sequence: expected, detail: d)) }
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
                if seq != expected {
                    problem(seq > expected ? "records \(expected)…\(seq - 1) are missing" : "record \(seq) is out of order or repeated")
                }
                if !constantTimeEquals(mac, chainMAC(previous: previous, sequence: seq, body: body)) {
                    problem("chain MAC does not verify (record edited, inserted, removed or reordered)")
                }
                if let plain = try? AEAD.open(body, key: keyring.auditSeal, associatedData: Array("medvault.v1.audit|".utf8) + AuditFormat.be64(seq)),
                    let event = try? decoder.decode(AuditEvent.self, from: Data(plain))
                {
                    records.append(AuditRecord(sequence: seq, segment: name, offset: offset, event: event))
                } else {
                    problem("record body fails authentication")
                }
                previous = mac
                expected = seq + 1
                offset = end
            }
        }
        report.records = records.count
        switch readAuditHead() {
        case .none:
            report.problems.append(.init(segment: "head", offset: 0, sequence: expected, detail: "audit/head fails authentication"))
        case .some(let head):
            if head.sequence != expected - 1 || !constantTimeEquals(head.mac, previous) {
                report.problems.append(.init(
                    segment: segments.last ?? "head", offset: 0, sequence: expected,
                    detail: head.sequence > expected - 1
                        ? "records \(expected)…\(head.sequence) were removed from the end of the log"
                        : "the log has records the head does not know (head at \(head.sequence))"))
            }
        }
        return (records, report)
    }
}

/// The OS account running this process, for CLI audit records.
public func currentOSUser() -> String {
    if let pw = getpwuid(getuid()), let name = pw.pointee.pw_name { return String(cString: name) }
    return "uid \(getuid())"
}
