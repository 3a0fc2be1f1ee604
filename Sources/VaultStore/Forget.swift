// Erasing patients for good (crypto-shredding) and applying a retention period. See docs/keys.md §5.
//
// A patient's blobs hang off one patient key, stored only in the catalog, wrapped by the master key.
// Deleting that row (with SQLite's secure_delete on, and the WAL truncated afterwards) destroys the
// only copy of the key in the vault: any copy of the blobs, anywhere, is then undecryptable by anyone,
// the master key's holder included. The blobs themselves are deleted too, and the vault's older catalog
// snapshots (which hold the wrapped key) are replaced by a new one. Backups drop the blobs at their next
// sync and the old snapshots when they prune.
//
// Crash safety: one transaction deletes the rows, lists the blobs in `pendingBlob` and records the
// erasure in `pendingErasure`; finishing it (files, WAL, snapshots, audit record) follows at once, or,
// after a crash, in the next writer. Leftover blobs are not counted as orphans by verify.
public import VaultAudit
public import VaultKeys
import VaultFormats
import VaultIO
public import Foundation
import VaultCatalog
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// What an erasure removed (or, for a plan, would remove).
public struct ErasureSummary: Sendable, Equatable, Codable {
    public var patients = 0
    public var studies = 0
    public var instances = 0
    public var bytes: Int64 = 0
    /// Short keyed pseudonyms of the patients removed (for the audit log; not reversible without the keys).
    public var pseudonyms: [String] = []
    /// Whether a new backup snapshot replaced the older ones (which hold the erased keys). When false,
    /// every snapshot was removed from the vault instead, and `backup publish` should be run.
    public var snapshotPublished = true
}

/// What `pendingErasure` keeps until an erasure is finished: the summary, and who asked and when, for
/// the audit record (which may be written by another process after a crash).
struct PendingErasure: Codable {
    var summary: ErasureSummary
    var detail: String
    var actor: String
    /// Absent in records written before roles were recorded ("cli" then).
    var role: String?
    var peerUID: UInt32?
    var peerPID: Int32?
    var time: Date
}

/// One study a retention run would remove.
public struct RetentionItem: Sendable, Equatable {
    public let patientID: String
    public let studyUID: String
    public let studyDate: String
    public let instances: Int
    public let bytes: Int64
}

public struct RetentionPlan: Sendable, Equatable {
    /// Studies dated before this day (YYYYMMDD) are removed.
    public let cutoff: String
    public var items: [RetentionItem] = []
    /// Studies without a usable StudyDate: kept, and reported, never guessed.
    public var undatedStudies = 0
    /// Patients left with no study, who are erased with their key.
    public var patientsErased = 0
    public var instances: Int { items.reduce(0) { $0 + $1.instances } }
    public var bytes: Int64 { items.reduce(0) { $0 + $1.bytes } }
}

extension Vault {
    /// What `forget(patientID:)` would remove: every patient record with that Patient ID (any issuer).
    public func forgetPreview(patientID: String) throws -> ErasureSummary {
        let rows = try patientRows(patientID: patientID)
        return try summary(patients: rows.map(\.id), studies: nil)
    }

    /// Crypto-shreds every patient with this Patient ID: key, catalog rows and blobs. A change by
    /// `actor` (`Vault.change`); the erasure writes its own audit record and replaces every snapshot.
    public func forget(patientID: String, by actor: AuditActor = .currentProcess) throws -> ErasureSummary {
        try change(.forget, by: actor, erasuresMustFinish: true) { report in
            let rows = try patientRows(patientID: patientID)
            guard !rows.isEmpty else { throw VaultError.notFound("no patient with that Patient ID is in the vault; nothing was changed") }
            var s = try summary(patients: rows.map(\.id), studies: nil)
            s.pseudonyms = rows.map { Self.pseudonym($0.ref) }
            report.detail = "erasing \(s.pseudonyms.joined(separator: ", "))"
            return try erase(patients: rows.map(\.id), studies: [], action: .forget, summary: s, detail: "", by: actor, report: &report)
        }
    }

    /// Studies whose StudyDate is before `cutoff` (YYYYMMDD).
    public func retentionPlan(cutoff: String) throws -> RetentionPlan {
        var plan = RetentionPlan(cutoff: cutoff)
        let c = try openCatalog(instances: false)
        var remaining: [Int64: Int] = [:]  // patient → studies kept
        for p in c.patients.keys { remaining[p] = 0 }
        var perStudy: [Int64: (count: Int, bytes: Int64)] = [:]
        for (seriesID, t) in c.tally {
            guard let se = c.series[seriesID] else { continue }
            perStudy[se.studyID, default: (0, 0)].count += t.count
            perStudy[se.studyID, default: (0, 0)].bytes += t.bytes
        }
        for s in c.studies.values.sorted(by: { ($0.record.date, $0.record.studyUID) < ($1.record.date, $1.record.studyUID) }) {
            let date = s.record.date.trimmingCharacters(in: .whitespaces)
            guard date.count == 8, date.allSatisfy(\.isNumber) else {
                plan.undatedStudies += 1
                remaining[s.patientID, default: 0] += 1
                continue
            }
            if date < cutoff {
                let t = perStudy[s.id] ?? (0, 0)
                plan.items.append(RetentionItem(
                    patientID: c.patients[s.patientID]?.record.patientID ?? "", studyUID: s.record.studyUID, studyDate: date,
                    instances: t.count, bytes: t.bytes))
            } else {
                remaining[s.patientID, default: 0] += 1
            }
        }
        plan.patientsErased = remaining.values.filter { $0 == 0 }.count
        return plan
    }

    /// The retention plan, as a recorded read by `actor` (it lists patients).
    public func retentionPlan(cutoff: String, by actor: AuditActor) throws -> RetentionPlan {
        try recordAccess(.retentionPlan, by: actor) { report in
            let plan = try retentionPlan(cutoff: cutoff)
            report.instances = plan.instances
            report.bytes = plan.bytes
            report.detail = "cutoff \(cutoff): \(plan.items.count) studies, \(plan.patientsErased) patients would be erased"
            return plan
        }
    }

    /// Removes the plan's studies (recomputed under the lock, so a plan made earlier cannot remove a
    /// study imported since); patients left without studies are erased with their key. A change by `actor`.
    public func applyRetention(cutoff: String, by actor: AuditActor = .currentProcess) throws -> (plan: RetentionPlan, erased: ErasureSummary) {
        try change(.retentionApply, by: actor, erasuresMustFinish: true) { report in
            let plan = try retentionPlan(cutoff: cutoff)
            let wanted = Set(plan.items.map(\.studyUID))
            let c = try openCatalog(instances: false)
            let studyIDs = c.studies.values.filter { wanted.contains($0.record.studyUID) }.map(\.id)
            var left: [Int64: Int] = [:]
            for s in c.studies.values where !wanted.contains(s.record.studyUID) { left[s.patientID, default: 0] += 1 }
            let emptied = c.patients.values.filter { left[$0.id, default: 0] == 0 }
            var s = try summary(patients: emptied.map(\.id), studies: studyIDs)
            s.pseudonyms = emptied.map { Self.pseudonym($0.ref) }
            report.detail = "cutoff \(cutoff)"
            return (plan, try erase(
                patients: emptied.map(\.id), studies: studyIDs, action: .retentionApply, summary: s, detail: "cutoff \(cutoff): ", by: actor,
                report: &report))
        }
    }

    // MARK: Internals

    private func patientRows(patientID: String) throws -> [(id: Int64, ref: [UInt8])] {
        let index = keyring.blindIndex(.patientID, Normalize.identifier(patientID))
        return try catalog.patients(patientIDIndex: index)
    }

    /// Counts of what erasing these patients (all their studies) and these studies removes.
    private func summary(patients: [Int64], studies: [Int64]?) throws -> ErasureSummary {
        let counts = try catalog.erasureCounts(patients: patients, studies: studies ?? [])
        return ErasureSummary(patients: patients.count, studies: counts.studies, instances: counts.instances, bytes: counts.bytes)
    }

    /// The erasure itself. One transaction deletes the rows and keys, lists the blobs in `pendingBlob`
    /// and records the erasure in `pendingErasure`; then `finishErasures` removes the files, truncates
    /// the WAL, replaces the snapshots and writes the audit record. If the process dies after the
    /// commit, the next writer runs `finishErasures` (`recoverInterruptedWrites`).
    private func erase(
        patients: [Int64], studies: [Int64], action: AuditAction, summary: ErasureSummary, detail: String, by actor: AuditActor,
        report: inout ChangeReport
    ) throws -> ErasureSummary {
        let record = PendingErasure(
            summary: summary, detail: detail, actor: actor.name, role: actor.role, peerUID: actor.peerUID, peerPID: actor.peerPID, time: Date())
        let encoded = String(decoding: try JSONFiles.encode(record, "the erasure record"), as: UTF8.self)
        // Foreign keys cascade to series and instances; patient rows take their wrapped key with them.
        try catalog.erase(patients: patients, studies: studies, action: action.rawValue, record: encoded)
        FaultInjection.point("erase.committed")
        // Committed: from here the erasure's own record (written by whoever finishes it) is the audit
        // record; a failure now is a partial change, recorded as such.
        report.outcome = .partial
        do {
            let done = try finishErasures(interrupted: false).last ?? summary
            report.recordedByWork = true
            return done
        } catch {
            throw VaultError.erasureUnfinished(String(describing: error))
        }
    }

    /// Finishes erasures a crash or an error left unfinished (see `finishErasures`) and returns them;
    /// none otherwise.
    @discardableResult
    public func finishPendingErasures() throws -> [ErasureSummary] {
        let lock: WriterLock
        do { lock = try WriterLock(path: layout.lock, onWait: {}) } catch { throw VaultError.io(error) }
        defer { withExtendedLifetime(lock) {} }
        try requireCurrentMasterKey()
        return try finishErasures(interrupted: true)
    }

    /// Finishes every committed erasure: deletes the blobs still listed, truncates the WAL (it holds
    /// the earlier page images; secure_delete zeroed the pages themselves), replaces the snapshots, and
    /// writes one audit record per erasure. Called with the writer lock held.
    @discardableResult
    func finishErasures(interrupted: Bool) throws -> [ErasureSummary] {
        let pending = try catalog.pendingErasures()
        guard !pending.isEmpty else { return [] }
        let leftovers = try catalog.unreferencedPendingBlobs()
        do { try blobStore.delete(leftovers.compactMap { BlobID(hex: $0) }) } catch { throw VaultError.io(error) }
        try catalog.removePendingBlobs(leftovers)
        try catalog.truncateWriteAheadLog()
        let published = replaceSnapshotsAfterErasure()
        var done: [ErasureSummary] = []
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        for p in pending {
            let record = try? decoder.decode(PendingErasure.self, from: Data(p.record.utf8))
            var s = record?.summary ?? ErasureSummary()
            s.snapshotPublished = published
            // The record names who asked and when, even when another process finishes the erasure.
            var event = AuditEvent(
                time: record?.time ?? Date(), actor: record?.actor ?? currentOSUser(), role: record?.role ?? "cli",
                peerUID: record == nil ? getuid() : record?.peerUID, peerPID: record == nil ? getpid() : record?.peerPID,
                action: AuditAction(rawValue: p.action), outcome: .ok)
            event.instances = s.instances
            event.bytes = s.bytes
            event.detail = (interrupted ? "finished after an interruption: " : "") + (record?.detail ?? "")
                + "erased \(s.pseudonyms.isEmpty ? "no patient" : s.pseudonyms.joined(separator: ", ")): \(s.studies) studies"
                + (published ? "" : "; no new snapshot could be written, every older one was removed")
            try audit(event)
            try catalog.removePendingErasure(id: p.id)
            done.append(s)
        }
        // Once more, so that the newest snapshot (what a restore brings back) carries the audit records
        // just written; it still keeps only itself.
        if published { _ = replaceSnapshotsAfterErasure() }
        return done
    }

    /// The vault's older catalog snapshots still hold the erased patients' wrapped keys: a new snapshot
    /// replaces them all (backups drop theirs when they prune). If it cannot be written, they go anyway.
    private func replaceSnapshotsAfterErasure() -> Bool {
        if let info = try? publishSnapshot(keeping: 1) {
            // Pruning is best effort: say "replaced" only if no older snapshot file is left.
            let older = FileIO.list(layout.snapshots).compactMap { SnapshotNames.parse($0) }.filter { $0.sequence != info.sequence }
            if older.isEmpty { return true }
        }
        removeAllSnapshots()
        return false
    }

    static func pseudonym(_ ref: [UInt8]) -> String { "patient-" + hex(Array(ref.prefix(6))) }
}

/// Retention periods as typed: `20y`, `18mo` (months), `3650d`. The cutoff is that long before `now`, in
/// UTC. A bare `m` is refused: it means minutes for token lifetimes and audit windows (`Duration`).
public enum RetentionPeriod {
    public static func cutoff(olderThan text: String, now: Date = Date()) throws(DurationError) -> String {
        let (n, unit) = try DurationText.split(text, units: ["y", "mo", "d"], example: "20y, 240mo or 3650d")
        guard n <= 200 * 366 else { throw DurationError(text: text, reason: "that is more than 200 years") }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        let component: Calendar.Component = unit == "y" ? .year : unit == "mo" ? .month : .day
        guard let date = calendar.date(byAdding: component, value: -n, to: now) else {
            throw DurationError(text: text, reason: "the date that long ago cannot be computed")
        }
        let c = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d%02d%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }
}
