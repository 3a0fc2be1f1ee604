// The audit log as a model for people: time windows for `audit show` and `audit report`, and the
// breach-notification report (who read or exported which patients' data, refusals, alerts,
// administrative changes), with stable JSON for tools. The CLI parses times and renders Markdown.
// The report only restates what the records hold; see docs/audit.md for what they do not show.
public import Foundation

// MARK: - Time windows

/// A window that ends before it starts. (Reading times from text is the CLI's: Sources/medvault.)
public struct AuditWindowError: Error, Equatable, Sendable {
    public let since: Date
    public let until: Date
}

/// The records an audit command looks at: from `since` to `until`, both included; nil is open-ended.
public struct AuditWindow: Sendable, Equatable {
    public let since: Date?
    public let until: Date?

    /// The whole log.
    public static let all = AuditWindow(checkedSince: nil, until: nil)

    public init(since: Date?, until: Date?) throws(AuditWindowError) {
        if let since, let until, since > until { throw AuditWindowError(since: since, until: until) }
        self.init(checkedSince: since, until: until)
    }

    private init(checkedSince since: Date?, until: Date?) {
        self.since = since
        self.until = until
    }

    public func contains(_ date: Date) -> Bool {
        (since.map { date >= $0 } ?? true) && (until.map { date <= $0 } ?? true)
    }
}

// MARK: - The report

/// The breach-notification report: what the audit log says happened to patient data in a window.
/// Field names are stable; tools may rely on them (`format` and `formatVersion` say which).
public struct AuditBreachReport: Codable, Sendable, Equatable {
    public var format = "medvault-audit-report"
    public var formatVersion = 1
    public var generatedAt: Date
    public var vaultID: String
    public var vaultPath: String
    public var window: Window
    public var integrity: Integrity
    public var summary: Summary
    public var patients: [PatientAccess]
    public var accounts: [AccountActivity]
    public var refused: [RefusedPeer]
    public var bursts: [Burst]
    public var alerts: [Alert]
    public var administrative: [AdminAction]

    /// A burst: at least this many refused requests from one peer within `burstSeconds`.
    public static let burstThreshold = 5
    public static let burstSeconds: TimeInterval = 60

    public struct Window: Codable, Sendable, Equatable {
        public var since: Date?
        public var until: Date?

        // Open ends are written as null, so the keys are always there.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(since, forKey: .since)
            try c.encode(until, forKey: .until)
        }
    }

    public struct Integrity: Codable, Sendable, Equatable {
        /// False when the chain, a seal or the head fails: records may have been removed or altered.
        public var ok: Bool
        public var records: Int
        public var segments: Int
        public var problems: [Problem]
    }

    public struct Problem: Codable, Sendable, Equatable {
        public var segment: String
        public var offset: Int
        public var record: UInt64
        public var detail: String
    }

    public struct Summary: Codable, Sendable, Equatable {
        public var recordsInWindow = 0
        /// Patients whose data was retrieved, exported, or shown (metadata, search results, listings).
        public var patients = 0
        /// Accounts (API accounts and OS users of the CLI) that read, exported or listed patient data.
        public var accounts = 0
        public var instancesRetrieved = 0
        public var instancesMetadata = 0
        public var instancesExported = 0
        /// Bytes of the records that carry a byte count (exports, WADO retrievals); see `recordsWithoutByteCount`.
        public var bytes: Int64 = 0
        /// Data-delivering records whose log entry carries no byte count (metadata requests).
        public var recordsWithoutByteCount = 0
        public var searches = 0
        public var listings = 0
        public var refused = 0
        public var refusedUnauthenticated = 0
        public var refusedForbidden = 0
        public var failed = 0
        public var bursts = 0
        public var alerts = 0
        public var administrativeActions = 0
    }

    /// What one account (or all of them) did with one patient's data, or in total.
    public struct Figures: Codable, Sendable, Equatable {
        /// WADO-RS retrievals (whole DICOM files, images included).
        public var retrievals = 0
        /// WADO-RS metadata requests (every attribute except the pixels).
        public var metadataRequests = 0
        /// CLI exports to files.
        public var exports = 0
        /// QIDO-RS searches whose results named the patient (identifiers and study attributes shown).
        public var searches = 0
        /// CLI `ls` listings that named the patient.
        public var listings = 0
        public var instancesRetrieved = 0
        public var instancesMetadata = 0
        public var instancesExported = 0
        public var bytes: Int64 = 0
        public var recordsWithoutByteCount = 0
        public var first: Date
        public var last: Date

        package init(at time: Date) {
            first = time
            last = time
        }

        package mutating func add(_ kind: AccessKind, _ e: AuditEvent) {
            first = min(first, e.time)
            last = max(last, e.time)
            switch kind {
            case .retrieve: retrievals += 1; instancesRetrieved += e.instances
            case .metadata: metadataRequests += 1; instancesMetadata += e.instances
            case .export: exports += 1; instancesExported += e.instances
            case .search: searches += 1
            case .list: listings += 1
            }
            // Exports and API retrievals record the bytes they delivered; metadata requests record none (0
            // then means "not recorded", not "nothing sent"), so such records are counted apart and shown as n/a.
            switch kind {
            case .export: bytes += e.bytes
            case .retrieve, .metadata: if e.bytes > 0 { bytes += e.bytes } else { recordsWithoutByteCount += 1 }
            case .search, .list: break
            }
        }
    }

    public struct PatientAccess: Codable, Sendable, Equatable {
        public var patientID: String
        /// The patient's name(s) as the catalog holds them now (the log records IDs, not names); empty
        /// when the patient is no longer in the catalog (forgotten) or was never imported.
        public var catalogNames: [String]
        public var accessors: [Accessor]
        public var totals: Figures
    }

    public struct Accessor: Codable, Sendable, Equatable {
        public var account: String
        /// The account's role, or "cli" when `account` is the OS user who ran a command.
        public var role: String
        public var peerUIDs: [UInt32]
        public var peerPIDs: [Int32]
        public var figures: Figures
    }

    public struct AccountActivity: Codable, Sendable, Equatable {
        public var account: String
        public var role: String
        public var peerUIDs: [UInt32]
        public var peerPIDs: [Int32]
        public var records = 0
        /// Distinct patients whose data this account read, exported or was shown.
        public var patients = 0
        public var figures: Figures
        public var imports = 0
        public var instancesImported = 0
        public var refused = 0
        public var failed = 0
        public var administrativeActions = 0
    }

    public struct RefusedPeer: Codable, Sendable, Equatable {
        /// "uid N", or "unknown peer" (the loopback TCP listener cannot see the peer).
        public var peer: String
        public var peerUID: UInt32?
        public var peerPIDs: [Int32]
        /// 401: missing, wrong, expired or revoked token, or disabled account.
        public var unauthenticated = 0
        /// 403: a valid account without the right (e.g. the backup role asking for image data).
        public var forbidden = 0
        /// Accounts named by the 403s (a 401 has no account).
        public var accounts: [String] = []
        public var first: Date
        public var last: Date
    }

    public struct Burst: Codable, Sendable, Equatable {
        public var peer: String
        public var start: Date
        public var end: Date
        public var refusals: Int
        /// The most refusals within any 60 s of the burst.
        public var peakPerMinute: Int
    }

    public struct Alert: Codable, Sendable, Equatable {
        public var record: UInt64
        public var time: Date
        public var peer: String
        public var detail: String
    }

    public struct AdminAction: Codable, Sendable, Equatable {
        public var record: UInt64
        public var time: Date
        public var actor: String
        public var role: String
        public var action: String
        public var outcome: String
        public var detail: String
    }
}

/// How a record touched patient data.
package enum AccessKind: Sendable {
    case retrieve, metadata, search, list, export
}

/// What a record is, for the report.
package enum AuditRecordKind: Sendable, Equatable {
    case access(AccessKind)
    /// `import` through the CLI: data in, not out.
    case importData
    /// An API request that reads no patient data (an unknown path, a 405, OPTIONS).
    case otherRequest
    case alert
    /// Everything else: accounts, tokens, keys, and actions this report does not know yet (never dropped).
    case administrative

    package static func of(_ e: AuditEvent) -> AuditRecordKind {
        switch e.action {
        case .alert: return .alert
        case .request(_, let path):
            guard let access = e.access else { return legacyRequestKind(method: e.action.requestMethod, path: path) }
            return of(access)
        case .export: return .access(.export)
        case .list: return .access(.list)
        case .importFiles: return .importData
        default: return .administrative
        }
    }

    /// What the server stated the request did. A kind written by a later release is not guessed at: the
    /// record counts for its account as a request, not as an access to a patient's data.
    package static func of(_ access: AuditAccess) -> AuditRecordKind {
        switch access {
        case .retrieve: .access(.retrieve)
        case .metadata: .access(.metadata)
        case .search: .access(.search)
        case .store: .importData
        case .noPatientData, .unrecognized: .otherRequest
        }
    }

    /// Records written before this release carry no access kind; these are the path shapes those
    /// releases served (docs/api.md): …/metadata, retrieval of a study, series or instance, their
    /// frames, bulk data, rendered images and thumbnails, and searches. Only GET and HEAD read
    /// (OPTIONS and 405 answers did not). Never needed for a record this release writes (the server
    /// states `access`). The reports of earlier releases missed the pixel routes and the search within a
    /// study: a breach report must not, so those shapes count here too.
    package static func legacyRequestKind(method: String? = "GET", path: String) -> AuditRecordKind {
        // Earlier releases classified a request whose path did not start with "/" as administrative.
        guard path.hasPrefix("/") else { return .administrative }
        let parts = path.split(separator: "/").map(String.init)
        guard parts.first == "dicom-web" else { return .otherRequest }
        guard method == nil || method == "GET" || method == "HEAD" else { return .otherRequest }
        let p = Array(parts.dropFirst())
        if p.last == "metadata" && p.first == "studies" { return .access(.metadata) }
        if p.first == "studies", let pixel = p.firstIndex(where: { ["frames", "bulkdata", "rendered", "thumbnail"].contains($0) }),
            pixel >= 2
        {
            return .access(.retrieve)
        }
        switch (p.count, p.first) {
        case (3, "studies") where p[2] == "instances": return .access(.search)
        case (1, "studies"), (1, "series"), (1, "instances"): return .access(.search)
        case (3, "studies") where p[2] == "series": return .access(.search)
        case (5, "studies") where p[2] == "series" && p[4] == "instances": return .access(.search)
        case (2, "studies"): return .access(.retrieve)
        case (4, "studies") where p[2] == "series": return .access(.retrieve)
        case (6, "studies") where p[2] == "series" && p[4] == "instances": return .access(.retrieve)
        default: return .otherRequest
        }
    }
}

extension AuditBreachReport {
    /// Builds the report from the records of the whole log (the window is applied here) and the result
    /// of checking them. `patientNames` maps Patient IDs to the names the catalog holds now.
    public init(
        records: [AuditRecord], verification: AuditVerifyReport, window: AuditWindow, generatedAt: Date, vaultID: String,
        vaultPath: String, patientNames: [String: [String]]
    ) {
        self.generatedAt = generatedAt
        self.vaultID = vaultID
        self.vaultPath = vaultPath
        self.window = Window(since: window.since, until: window.until)
        integrity = Integrity(
            ok: verification.ok, records: verification.records, segments: verification.segments,
            problems: verification.problems.map { Problem(segment: $0.segment, offset: $0.offset, record: $0.sequence, detail: $0.detail) })
        // One pass sorts each record of the window into the tables; the tables are then ordered, and the
        // summary's totals are added up from them.
        var tally = Tally()
        for r in records where window.contains(r.event.time) { tally.add(r) }
        patients = tally.patientAccess(names: patientNames)
        accounts = tally.accountActivity()
        refused = tally.byPeer.values.sorted { $0.peer < $1.peer }
        bursts = tally.refusalBursts()
        alerts = tally.alerts
        administrative = tally.administrative
        summary = tally.summary
        addTotalsToSummary()
    }

    /// The summary's figures that come from the finished tables: patients, accounts that saw patient
    /// data, and the sum of every account's figures.
    private mutating func addTotalsToSummary() {
        summary.patients = patients.count
        summary.accounts = accounts.filter { $0.patients > 0 }.count
        for p in accounts.map(\.figures) {
            summary.instancesRetrieved += p.instancesRetrieved
            summary.instancesMetadata += p.instancesMetadata
            summary.instancesExported += p.instancesExported
            summary.bytes += p.bytes
            summary.recordsWithoutByteCount += p.recordsWithoutByteCount
            summary.searches += p.searches
            summary.listings += p.listings
        }
        summary.bursts = bursts.count
        summary.alerts = alerts.count
        summary.administrativeActions = administrative.count
    }

    /// The window's records sorted into the report's tables, keyed as they are read; alerts and
    /// administrative actions in log order. The counts of refusals and failed accesses go straight into
    /// the summary.
    private struct Tally {
        var summary = Summary()
        /// Patient ID → account key → what that account did with the patient's data.
        var byPatient: [String: [String: Accessor]] = [:]
        var byAccount: [String: AccountActivity] = [:]
        var patientsOfAccount: [String: Set<String>] = [:]
        var byPeer: [String: RefusedPeer] = [:]
        var refusalTimes: [String: [Date]] = [:]
        var alerts: [Alert] = []
        var administrative: [AdminAction] = []

        static func peerName(_ e: AuditEvent) -> String { e.peerUID.map { "uid \($0)" } ?? "unknown peer" }
        /// An account is a name and a role (the CLI's OS user and an API account may share a name).
        static func accountKey(_ e: AuditEvent) -> String { e.actor + "\u{0}" + e.role }

        mutating func add(_ r: AuditRecord) {
            let e = r.event
            summary.recordsInWindow += 1
            // A refusal is counted as one whatever was asked for: nothing was disclosed.
            guard e.outcome != .denied else {
                addRefusal(e)
                return
            }
            switch AuditRecordKind.of(e) {
            case .alert:
                alerts.append(Alert(record: r.sequence, time: e.time, peer: Self.peerName(e), detail: e.detail))
            case .administrative:
                administrative.append(AdminAction(
                    record: r.sequence, time: e.time, actor: e.actor, role: e.role, action: e.action.rawValue, outcome: e.outcome.rawValue, detail: e.detail))
                account(e) { $0.administrativeActions += 1 }
            case .importData:
                account(e) {
                    $0.imports += 1
                    $0.instancesImported += e.instances
                    if e.outcome == .failed { $0.failed += 1 }
                }
            case .otherRequest:
                account(e) { if e.outcome != .ok { $0.failed += 1 } }
            case .access(let kind):
                addAccess(kind, e)
            }
        }

        /// A refused request (401, 403): counted per peer, for bursts, and for the account a 403 names.
        mutating func addRefusal(_ e: AuditEvent) {
            let peer = Self.peerName(e)
            var p = byPeer[peer] ?? RefusedPeer(peer: peer, peerUID: e.peerUID, peerPIDs: [], first: e.time, last: e.time)
            var noUIDs: [UInt32] = []
            AuditBreachReport.note(e, uids: &noUIDs, pids: &p.peerPIDs)
            p.first = min(p.first, e.time)
            p.last = max(p.last, e.time)
            if e.detail == "403" {
                p.forbidden += 1
                summary.refusedForbidden += 1
            } else {
                p.unauthenticated += 1
                summary.refusedUnauthenticated += 1
            }
            if e.actor != "-" && !p.accounts.contains(e.actor) { p.accounts.append(e.actor) }
            byPeer[peer] = p
            refusalTimes[peer, default: []].append(e.time)
            summary.refused += 1
            if e.actor != "-" { account(e) { $0.refused += 1 } }
        }

        /// An access to patient data: for its account, and for each patient it names. A failed one
        /// delivered nothing and is only counted as failed.
        mutating func addAccess(_ kind: AccessKind, _ e: AuditEvent) {
            guard e.outcome == .ok else {
                summary.failed += 1
                account(e) { $0.failed += 1 }
                return
            }
            account(e) { $0.figures.add(kind, e) }
            let key = Self.accountKey(e)
            patientsOfAccount[key, default: []].formUnion(e.patientIDs)
            // A record naming several patients (a search) counts in full for each of them.
            for id in Set(e.patientIDs) {
                var a = byPatient[id]?[key]
                    ?? Accessor(account: e.actor, role: e.role, peerUIDs: [], peerPIDs: [], figures: Figures(at: e.time))
                AuditBreachReport.note(e, uids: &a.peerUIDs, pids: &a.peerPIDs)
                a.figures.add(kind, e)
                byPatient[id, default: [:]][key] = a
            }
        }

        /// Counts a record for its account (every record that names one), then applies `update`.
        mutating func account(_ e: AuditEvent, _ update: (inout AccountActivity) -> Void) {
            let key = Self.accountKey(e)
            var a = byAccount[key]
                ?? AccountActivity(account: e.actor, role: e.role, peerUIDs: [], peerPIDs: [], figures: Figures(at: e.time))
            a.records += 1
            AuditBreachReport.note(e, uids: &a.peerUIDs, pids: &a.peerPIDs)
            a.figures.first = min(a.figures.first, e.time)
            a.figures.last = max(a.figures.last, e.time)
            update(&a)
            byAccount[key] = a
        }

        /// Patients by ID, each with its accessors by account and role, and their figures added up.
        func patientAccess(names: [String: [String]]) -> [PatientAccess] {
            byPatient.keys.sorted().compactMap { id in
                guard let accessors = byPatient[id]?.values.sorted(by: { ($0.account, $0.role) < ($1.account, $1.role) }),
                    let firstFigures = accessors.first?.figures
                else { return nil }
                var totals = firstFigures
                for a in accessors.dropFirst() { totals.merge(a.figures) }
                return PatientAccess(patientID: id, catalogNames: names[id] ?? [], accessors: accessors, totals: totals)
            }
        }

        /// Accounts by name and role, each with the number of distinct patients it saw.
        func accountActivity() -> [AccountActivity] {
            byAccount.map { key, value in
                var a = value
                a.patients = patientsOfAccount[key]?.count ?? 0
                return a
            }.sorted { ($0.account, $0.role) < ($1.account, $1.role) }
        }

        /// Every peer's bursts, in time order.
        func refusalBursts() -> [Burst] {
            refusalTimes.keys.sorted().flatMap { AuditBreachReport.bursts(peer: $0, times: refusalTimes[$0] ?? []) }
                .sorted { ($0.start, $0.peer) < ($1.start, $1.peer) }
        }
    }

    package static func note(_ e: AuditEvent, uids: inout [UInt32], pids: inout [Int32]) {
        if let u = e.peerUID, !uids.contains(u) { uids.append(u); uids.sort() }
        if let p = e.peerPID, !pids.contains(p) { pids.append(p); pids.sort() }
    }

    /// Runs of refusals from one peer in which every refusal lies in some 60 s span holding at least
    /// `burstThreshold` of them; runs closer than 60 s apart are one burst.
    package static func bursts(peer: String, times unsorted: [Date]) -> [Burst] {
        let t = unsorted.sorted()
        var inBurst = [Bool](repeating: false, count: t.count)
        var j = 0
        for i in t.indices {
            j = max(j, i)
            while j + 1 < t.count && t[j + 1].timeIntervalSince(t[i]) < burstSeconds { j += 1 }
            if j - i + 1 >= burstThreshold { for k in i...j { inBurst[k] = true } }
        }
        var out: [Burst] = []
        var current: [Date] = []
        func close() {
            guard let start = current.first, let end = current.last else { return }
            var peak = 0, k = 0
            for i in current.indices {
                while k + 1 < current.count && current[k + 1].timeIntervalSince(current[i]) < burstSeconds { k += 1 }
                peak = max(peak, max(k, i) - i + 1)
            }
            out.append(Burst(peer: peer, start: start, end: end, refusals: current.count, peakPerMinute: peak))
            current = []
        }
        for (i, time) in t.enumerated() where inBurst[i] {
            if let last = current.last, time.timeIntervalSince(last) >= burstSeconds { close() }
            current.append(time)
        }
        close()
        return out
    }

    /// The report as JSON: sorted keys, ISO 8601 times in UTC.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }
}

extension AuditBreachReport.Figures {
    package mutating func merge(_ o: Self) {
        retrievals += o.retrievals
        metadataRequests += o.metadataRequests
        exports += o.exports
        searches += o.searches
        listings += o.listings
        instancesRetrieved += o.instancesRetrieved
        instancesMetadata += o.instancesMetadata
        instancesExported += o.instancesExported
        bytes += o.bytes
        recordsWithoutByteCount += o.recordsWithoutByteCount
        first = min(first, o.first)
        last = max(last, o.last)
    }
}

