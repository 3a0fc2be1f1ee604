// The one path every change to a vault takes, whoever calls: the CLI, the API server, a DICOM receiver.
// A change
//   1. holds the vault's writer lock (one writer at a time, across processes);
//   2. runs only if this process's master key is still the catalog's (another may have rotated it);
//   3. first finishes what an interrupted writer left: staging files, uncommitted blobs, erasures;
//   4. does its work, which reports what it did in a `ChangeReport` as it goes;
//   5. appends its typed audit record, whether the work succeeded or not;
//   6. publishes a new signed snapshot for the backup job when the work wrote anything, or when the
//      newest snapshot is older than the catalog (an earlier writer committed, then stopped before
//      publishing: docs/backup.md, "Stale snapshots").
// The public change methods (import, forget, retention, accounts, tokens, key slots, rotation) are all
// built on `change`, so no caller can skip 2–6. Reads of patient data take `recordAccess` (step 5 only).
// See docs/design.md §5.
public import VaultAudit
public import VaultKeys
public import VaultFormats
import VaultIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Who acts: what the audit record names.
public struct AuditActor: Sendable, Equatable {
    /// An account name, or the OS user for command-line actions.
    public var name: String
    /// The account's role, or "cli".
    public var role: String
    public var peerUID: UInt32?
    public var peerPID: Int32?

    public init(name: String, role: String, peerUID: UInt32? = nil, peerPID: Int32? = nil) {
        self.name = name
        self.role = role
        self.peerUID = peerUID
        self.peerPID = peerPID
    }

    /// The OS user running this process: the actor of command-line actions.
    public static var currentProcess: AuditActor {
        AuditActor(name: currentOSUser(), role: "cli", peerUID: getuid(), peerPID: getpid())
    }

    func event(_ action: AuditAction, _ report: ChangeReport, time: Date = Date()) -> AuditEvent {
        var e = AuditEvent(time: time, actor: name, role: role, peerUID: peerUID, peerPID: peerPID, action: action, outcome: report.outcome)
        e.patientIDs = report.patientIDs
        e.studyUIDs = report.studyUIDs
        e.instances = report.instances
        e.bytes = report.bytes
        e.detail = report.detail
        return e
    }
}

/// What a change or an audited read did, filled in by the work as it goes, so that a failure still
/// records what had been done by then.
public struct ChangeReport: Sendable {
    public var outcome: AuditOutcome = .ok
    public var patientIDs: [String] = []
    public var studyUIDs: [String] = []
    public var instances = 0
    public var bytes: Int64 = 0
    public var detail = ""
    /// The work wrote to the vault (even if it then failed): a snapshot follows.
    public var wroteVault = false
    /// The work wrote its own audit record and snapshots: an erasure does, because after a crash another
    /// process finishes it and must record it (docs/keys.md).
    var recordedByWork = false
}

/// The change was made and recorded, but the backup snapshot after it could not be written. The backup
/// lags until the next change or `medvault backup publish`; `value` is what the change returned.
public struct SnapshotNotPublished: Error, CustomStringConvertible {
    public let action: AuditAction
    public let value: any Sendable
    public let reason: String
    public var description: String {
        "\(action) was done and recorded, but the backup snapshot after it was not written: \(reason); "
            + "run `medvault backup publish` (the next change also writes one)"
    }
}

/// The work was done, but its audit record could not be written.
public struct ChangeNotAudited: Error, CustomStringConvertible {
    public let action: AuditAction
    public let reason: String
    public var description: String { "\(action) was done, but its audit record could not be written: \(reason)" }
}

extension Vault {
    /// Steps 1–6 (see the top of this file).
    func change<R: Sendable>(
        _ action: AuditAction, by actor: AuditActor, onWait: () -> Void = {}, erasuresMustFinish: Bool = false,
        _ work: (inout ChangeReport) throws -> R
    ) throws -> R {
        try withWriterLock(onWait: onWait, erasuresMustFinish: erasuresMustFinish) {
            try recordChange(action, by: actor, work)
        }
    }

    /// Steps 1–3: runs `body` holding the writer lock, with our master key checked and interrupted
    /// writes finished. An erasure left unfinished is finished best-effort (an import must not fail
    /// because, say, the WAL is busy), or as a requirement for another erasure.
    func withWriterLock<R>(onWait: () -> Void = {}, erasuresMustFinish: Bool = false, _ body: () throws -> R) throws -> R {
        let lock: WriterLock
        do { lock = try WriterLock(path: layout.lock, onWait: onWait) } catch { throw VaultError.io(error) }
        defer { withExtendedLifetime(lock) {} }
        // Patient keys are wrapped by our master key: it must still be the catalog's.
        try requireCurrentMasterKey()
        try recoverInterruptedWrites()
        // What an interrupted publish left in snapshots/ (best effort: it blocks no change; verify lists it).
        _ = try? sweepSnapshotLeftovers()
        if erasuresMustFinish { try finishErasures(interrupted: true) }
        return try body()
    }

    /// Steps 4–6, with the writer lock held.
    func recordChange<R: Sendable>(_ action: AuditAction, by actor: AuditActor, _ work: (inout ChangeReport) throws -> R) throws -> R {
        var report = ChangeReport()
        let value: R
        do {
            value = try work(&report)
        } catch {
            if !report.recordedByWork {
                var failed = report
                if failed.outcome == .ok { failed.outcome = .failed }
                failed.detail = failed.detail.isEmpty ? "\(error)" : "\(failed.detail): \(error)"
                // The work's own error is what the caller must see; a log that also fails is secondary.
                try? audit(actor.event(action, failed))
                // What was committed before the failure, or by an earlier writer.
                if report.wroteVault || snapshotIsStale() { _ = try? publishSnapshot() }
            }
            throw error
        }
        guard !report.recordedByWork else { return value }
        do { try audit(actor.event(action, report)) } catch {
            throw ChangeNotAudited(action: action, reason: String(describing: error))
        }
        if report.wroteVault || snapshotIsStale() {
            do { _ = try publishSnapshot() } catch {
                var note = ChangeReport()
                note.outcome = .failed
                note.detail = "after \(action): \(error)"
                try? audit(actor.event(.snapshotPublish, note))
                throw SnapshotNotPublished(action: action, value: value, reason: String(describing: error))
            }
        }
        return value
    }

    /// A read of patient data: the value is returned only once its audit record is written; a failed
    /// read is recorded too.
    func recordAccess<R>(_ action: AuditAction, by actor: AuditActor, _ work: (inout ChangeReport) throws -> R) throws -> R {
        var report = ChangeReport()
        let value: R
        do {
            value = try work(&report)
        } catch {
            var failed = report
            failed.outcome = .failed
            failed.detail = failed.detail.isEmpty ? "\(error)" : "\(failed.detail): \(error)"
            try? audit(actor.event(action, failed))
            throw error
        }
        do { try audit(actor.event(action, report)) } catch {
            throw ChangeNotAudited(action: action, reason: String(describing: error))
        }
        return value
    }

    /// Steps 1–3 and 6 with no work of its own: finishes what an interrupted writer left and publishes
    /// if the newest snapshot lags the catalog. For a command that finds nothing to change (a retention
    /// run with nothing left to remove) but must still leave the vault settled. Records nothing: it
    /// changes nothing an earlier, recorded change did not.
    public func finishInterruptedWork() throws {
        try withWriterLock {
            if snapshotIsStale() { _ = try publishSnapshot() }
        }
    }

    /// Writes a snapshot and signed manifest now, as a recorded change (`medvault backup publish`).
    public func publishSnapshot(by actor: AuditActor) throws -> SnapshotInfo {
        try change(.snapshotPublish, by: actor) { report in
            let info = try publishSnapshot()
            report.detail = "snapshot \(info.sequence): \(info.blobs) blobs"
            return info
        }
    }

    /// Records a restore into this (new) vault, as a change by `actor`.
    public func recordRestore(from location: String, sequence: UInt64, complete: Bool, by actor: AuditActor) throws {
        try change(.backupRestore, by: actor) { report in
            report.outcome = complete ? .ok : .partial
            report.detail = "snapshot \(sequence) from \(location)"
        }
    }
}
