// Reading the audit log for people: time windows for `audit show` and `audit report`, and the
// breach-notification report (who read or exported which patients' data, refusals, alerts,
// administrative changes), as Markdown for a data-protection officer and as JSON for tools.
// The report only restates what the records hold; see docs/audit.md for what they do not show.
public import Foundation

// MARK: - Time windows

/// A `--since` or `--until` value that is not understood, or a window that ends before it starts.
public enum AuditTimeError: Error, Equatable, Sendable, CustomStringConvertible {
    case unrecognised(option: String, value: String)
    case unrecognisedSpan(option: String, reason: String)
    case sinceAfterUntil(since: Date, until: Date)

    public var description: String {
        switch self {
        case .unrecognised(let option, let value):
            "\(option) \(value): not a time. Give a date (2026-11-23), a date and time (2026-11-23T14:30, "
                + "2026-11-23T14:30:00+01:00; UTC when no zone is given), or a span before now (30min, 72h, 7d, 2w)"
        case .unrecognisedSpan(let option, let reason): "\(option) \(reason)"
        case .sinceAfterUntil(let since, let until):
            "--since (\(AuditText.time(since))) is after --until (\(AuditText.time(until))): the window is empty"
        }
    }
}

/// The records an audit command looks at: from `since` to `until`, both included; nil is open-ended.
public struct AuditWindow: Sendable, Equatable {
    public let since: Date?
    public let until: Date?

    /// The whole log.
    public static let all = AuditWindow(checkedSince: nil, until: nil)

    public init(since: Date?, until: Date?) throws(AuditTimeError) {
        if let since, let until, since > until { throw .sinceAfterUntil(since: since, until: until) }
        self.init(checkedSince: since, until: until)
    }

    private init(checkedSince since: Date?, until: Date?) {
        self.since = since
        self.until = until
    }

    /// Parses command-line values. A date, or a time without seconds, given as `until` means the end
    /// of that day or minute, so `--since 2026-11-01 --until 2026-11-30` is the whole of November.
    public static func parse(since: String?, until: String?, now: Date = Date()) throws(AuditTimeError) -> AuditWindow {
        try AuditWindow(
            since: since.map { s throws(AuditTimeError) in try AuditTime.parse(s, option: "--since", now: now, asEnd: false) },
            until: until.map { s throws(AuditTimeError) in try AuditTime.parse(s, option: "--until", now: now, asEnd: true) })
    }

    public func contains(_ date: Date) -> Bool {
        (since.map { date >= $0 } ?? true) && (until.map { date <= $0 } ?? true)
    }
}

/// The time forms the audit commands accept. Parsed by hand, not by a locale-dependent formatter, so
/// that anything not listed is refused rather than guessed at.
public enum AuditTime {
    /// - `2026-11-23` (UTC midnight; as an end, the end of that day)
    /// - `2026-11-23T14:30`, `2026-11-23 14:30:05`, `…14:30:05.250`, each optionally followed by `Z`,
    ///   `+01:00`, `+0100` or `+01`; no zone means UTC
    /// - `30min`, `72h`, `7d`, `2w`, `90s`: that long before `now` (`DurationText`); and `now`
    public static func parse(_ text: String, option: String, now: Date, asEnd: Bool) throws(AuditTimeError) -> Date {
        let s = text.trimmingCharacters(in: .whitespaces)
        if s.lowercased() == "now" { return now }
        if let span = try relativeSpan(s, option: option) { return now.addingTimeInterval(-span) }
        if let (start, precision) = absolute(s) {
            // An end given to the day, minute or second includes all of it (times in the log are whole seconds).
            return asEnd && precision > 0 ? start.addingTimeInterval(precision - 0.001) : start
        }
        throw .unrecognised(option: option, value: text)
    }

    /// A span (`DurationText`), nil when `s` is not one; a bare `m` is an error with a hint.
    static func relativeSpan(_ s: String, option: String) throws(AuditTimeError) -> TimeInterval? {
        do { return try DurationText.seconds(s) } catch {
            if s.count >= 2, s.hasSuffix("m"), s.dropLast().allSatisfy(\.isASCIIDigit) {
                throw .unrecognisedSpan(option: option, reason: error.description)
            }
            return nil
        }
    }

    /// The instant and the length of the unit it was given to (86400, 60, 1, or 0 with a fraction).
    static func absolute(_ s: String) -> (Date, TimeInterval)? {
        var p = Array(s.utf8)[...]
        func number(_ width: Int) -> Int? {
            guard p.count >= width, p.prefix(width).allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let v = p.prefix(width).reduce(0) { $0 * 10 + Int($1 - 0x30) }
            p = p.dropFirst(width)
            return v
        }
        func take(_ c: Character) -> Bool {
            guard let f = p.first, f == c.asciiValue else { return false }
            p = p.dropFirst()
            return true
        }
        guard let year = number(4), take("-"), let month = number(2), take("-"), let day = number(2),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year)
        else { return nil }
        let midnight = TimeInterval(daysFromCivil(year: year, month: month, day: day)) * 86400
        if p.isEmpty { return (Date(timeIntervalSince1970: midnight), 86400) }
        guard take("T") || take("t") || take(" "), let hour = number(2), take(":"), let minute = number(2),
            hour < 24, minute < 60
        else { return nil }
        var seconds = TimeInterval(hour * 3600 + minute * 60), precision: TimeInterval = 60
        if take(":") {
            guard let sec = number(2), sec < 60 else { return nil }
            seconds += TimeInterval(sec)
            precision = 1
            if take(".") || take(",") {
                let digits = p.prefix { $0 >= 0x30 && $0 <= 0x39 }.prefix(9)
                guard !digits.isEmpty else { return nil }
                p = p.dropFirst(digits.count)
                // As an integer over a power of ten, so that .25 is exactly a quarter of a second.
                seconds += Double(digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }) / pow(10, Double(digits.count))
                precision = 0
            }
        }
        var offset = 0
        if take("Z") || take("z") {
        } else if let sign = p.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
            p = p.dropFirst()
            guard let oh = number(2), oh <= 14 else { return nil }
            var om = 0
            if !p.isEmpty {
                _ = take(":")
                guard let m = number(2), m < 60 else { return nil }
                om = m
            }
            offset = (oh * 3600 + om * 60) * (sign == UInt8(ascii: "-") ? -1 : 1)
        }
        guard p.isEmpty else { return nil }
        return (Date(timeIntervalSince1970: midnight + seconds - TimeInterval(offset)), precision)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
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

        init(at time: Date) {
            first = time
            last = time
        }

        mutating func add(_ kind: AccessKind, _ e: AuditEvent) {
            first = min(first, e.time)
            last = max(last, e.time)
            switch kind {
            case .retrieve: retrievals += 1; instancesRetrieved += e.instances
            case .metadata: metadataRequests += 1; instancesMetadata += e.instances
            case .export: exports += 1; instancesExported += e.instances
            case .search: searches += 1
            case .list: listings += 1
            }
            // The CLI records the bytes it exported; the API does not record bytes today (0 then means "not
            // recorded", not "nothing sent"), so such records are counted apart and shown as n/a.
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
enum AccessKind: Sendable {
    case retrieve, metadata, search, list, export
}

/// What a record is, for the report.
enum AuditRecordKind: Sendable, Equatable {
    case access(AccessKind)
    /// `import` through the CLI: data in, not out.
    case importData
    /// An API request that is none of the DICOMweb routes (e.g. an unknown path).
    case otherRequest
    case alert
    /// Everything else: accounts, tokens, keys, and actions this report does not know yet (never dropped).
    case administrative

    static func of(_ e: AuditEvent) -> AuditRecordKind {
        switch e.action {
        case .alert: return .alert
        case .request(_, let path) where path.hasPrefix("/"):
            let parts = path.split(separator: "/").map(String.init)
            return parts.first == "dicom-web" ? dicomweb(Array(parts.dropFirst())) : .otherRequest
        case .export: return .access(.export)
        case .list: return .access(.list)
        case .importFiles: return .importData
        default: return .administrative
        }
    }

    /// The routes of docs/api.md: …/metadata, retrieval of a study, series or instance, and searches.
    static func dicomweb(_ p: [String]) -> AuditRecordKind {
        if p.last == "metadata" && p.first == "studies" { return .access(.metadata) }
        switch (p.count, p.first) {
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
        summary = Summary()
        patients = []
        accounts = []
        refused = []
        bursts = []
        alerts = []
        administrative = []

        let inWindow = records.filter { window.contains($0.event.time) }
        summary.recordsInWindow = inWindow.count
        var byPatient: [String: [String: Accessor]] = [:]
        var byAccount: [String: AccountActivity] = [:]
        var patientsOfAccount: [String: Set<String>] = [:]
        var byPeer: [String: RefusedPeer] = [:]
        var refusalTimes: [String: [Date]] = [:]

        func peerName(_ e: AuditEvent) -> String { e.peerUID.map { "uid \($0)" } ?? "unknown peer" }
        func accountKey(_ e: AuditEvent) -> String { e.actor + "\u{0}" + e.role }
        func account(_ e: AuditEvent, _ update: (inout AccountActivity) -> Void) {
            var a = byAccount[accountKey(e)]
                ?? AccountActivity(account: e.actor, role: e.role, peerUIDs: [], peerPIDs: [], figures: Figures(at: e.time))
            a.records += 1
            Self.note(e, uids: &a.peerUIDs, pids: &a.peerPIDs)
            a.figures.first = min(a.figures.first, e.time)
            a.figures.last = max(a.figures.last, e.time)
            update(&a)
            byAccount[accountKey(e)] = a
        }

        for r in inWindow {
            let e = r.event
            if e.outcome == .denied {
                let peer = peerName(e)
                var p = byPeer[peer] ?? RefusedPeer(peer: peer, peerUID: e.peerUID, peerPIDs: [], first: e.time, last: e.time)
                var noUIDs: [UInt32] = []
                Self.note(e, uids: &noUIDs, pids: &p.peerPIDs)
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
                continue
            }
            switch AuditRecordKind.of(e) {
            case .alert:
                alerts.append(Alert(record: r.sequence, time: e.time, peer: peerName(e), detail: e.detail))
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
                guard e.outcome == .ok else {
                    summary.failed += 1
                    account(e) { $0.failed += 1 }
                    continue
                }
                account(e) { $0.figures.add(kind, e) }
                patientsOfAccount[accountKey(e), default: []].formUnion(e.patientIDs)
                // A record naming several patients (a search) counts in full for each of them.
                for id in Set(e.patientIDs) {
                    var a = byPatient[id]?[accountKey(e)]
                        ?? Accessor(account: e.actor, role: e.role, peerUIDs: [], peerPIDs: [], figures: Figures(at: e.time))
                    Self.note(e, uids: &a.peerUIDs, pids: &a.peerPIDs)
                    a.figures.add(kind, e)
                    byPatient[id, default: [:]][accountKey(e)] = a
                }
            }
        }

        patients = byPatient.keys.sorted().compactMap { id in
            guard let accessors = byPatient[id]?.values.sorted(by: { ($0.account, $0.role) < ($1.account, $1.role) }),
                let firstFigures = accessors.first?.figures
            else { return nil }
            var totals = firstFigures
            for a in accessors.dropFirst() { totals.merge(a.figures) }
            return PatientAccess(patientID: id, catalogNames: patientNames[id] ?? [], accessors: accessors, totals: totals)
        }
        accounts = byAccount.map { key, value in
            var a = value
            a.patients = patientsOfAccount[key]?.count ?? 0
            return a
        }.sorted { ($0.account, $0.role) < ($1.account, $1.role) }
        refused = byPeer.values.sorted { $0.peer < $1.peer }
        bursts = refusalTimes.keys.sorted().flatMap { Self.bursts(peer: $0, times: refusalTimes[$0] ?? []) }
            .sorted { ($0.start, $0.peer) < ($1.start, $1.peer) }

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

    static func note(_ e: AuditEvent, uids: inout [UInt32], pids: inout [Int32]) {
        if let u = e.peerUID, !uids.contains(u) { uids.append(u); uids.sort() }
        if let p = e.peerPID, !pids.contains(p) { pids.append(p); pids.sort() }
    }

    /// Runs of refusals from one peer in which every refusal lies in some 60 s span holding at least
    /// `burstThreshold` of them; runs closer than 60 s apart are one burst.
    static func bursts(peer: String, times unsorted: [Date]) -> [Burst] {
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
    mutating func merge(_ o: Self) {
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

extension Vault {
    /// Reads and checks the whole log, then reports on the records in `window`. Patient names come from
    /// the catalog as it is now: the log itself records Patient IDs only.
    public func auditReport(window: AuditWindow, now: Date = Date()) throws -> AuditBreachReport {
        let (records, verification) = readAudit()
        let wanted = Set(records.filter { window.contains($0.event.time) }.flatMap(\.event.patientIDs))
        var names: [String: [String]] = [:]
        if !wanted.isEmpty {
            for p in try listPatients() where wanted.contains(p.patient.patientID) && !p.patient.name.isEmpty {
                if !(names[p.patient.patientID] ?? []).contains(p.patient.name) { names[p.patient.patientID, default: []].append(p.patient.name) }
            }
        }
        return AuditBreachReport(
            records: records, verification: verification, window: window, generatedAt: now, vaultID: config.vaultID,
            vaultPath: layout.root, patientNames: names)
    }
}

extension Vault {
    /// The report as a recorded read by `actor`: it names patients. When the log is already damaged the
    /// report matters more than its record, so a record that cannot be written is returned as
    /// `unrecorded` instead of withholding the report; on an intact log it is an error.
    public func auditReport(
        window: AuditWindow, now: Date = Date(), by actor: AuditActor, detail: (AuditBreachReport) -> String
    ) throws -> (report: AuditBreachReport, unrecorded: String?) {
        let report = try auditReport(window: window, now: now)
        var record = ChangeReport()
        record.detail = detail(report)
        do { try audit(actor.event(.auditReport, record, time: now)) } catch {
            guard !report.integrity.ok else { throw ChangeNotAudited(action: .auditReport, reason: "\(error)") }
            return (report, "\(error)")
        }
        return (report, nil)
    }
}

// MARK: - Markdown

/// Small text helpers shared by the report and the audit commands.
public enum AuditText {
    /// `2026-11-23 14:30:05 UTC`.
    public static func time(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC")
    }

    /// `532 bytes`, `12.4 kB`, `3.1 MB`, `1.20 GB` (decimal units).
    public static func bytes(_ n: Int64) -> String {
        let d = Double(n)
        if n < 1000 { return "\(n) bytes" }
        if n < 1_000_000 { return String(format: "%.1f kB", d / 1e3) }
        if n < 1_000_000_000 { return String(format: "%.1f MB", d / 1e6) }
        return String(format: "%.2f GB", d / 1e9)
    }

    static func plural(_ n: Int, _ one: String, _ many: String? = nil) -> String {
        "\(n) " + (n == 1 ? one : many ?? one + "s")
    }

    /// A table cell: Markdown's own characters escaped, so a name cannot break the table or format.
    static func cell(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\", "|", "*", "_", "`", "<", ">", "[", "]", "#": out.append("\\"); out.append(c)
            case "\n", "\r": out.append(" ")
            default: out.append(c)
            }
        }
        return out.isEmpty ? "–" : out
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        ([header, header.map { _ in "---" }] + rows).map { "| " + $0.joined(separator: " | ") + " |" }.joined(separator: "\n")
    }

    static func peers(_ uids: [UInt32], _ pids: [Int32]) -> String {
        guard !uids.isEmpty || !pids.isEmpty else { return "unknown (TCP)" }
        var s = uids.map { "uid \($0)" }.joined(separator: ", ")
        if !pids.isEmpty {
            let shown = pids.prefix(3).map(String.init).joined(separator: ", ")
            s += (s.isEmpty ? "" : "; ") + (pids.count == 1 ? "pid " : "pids ") + shown + (pids.count > 3 ? " (+\(pids.count - 3) more)" : "")
        }
        return s
    }
}

extension AuditBreachReport {
    /// The report as a Markdown document a data-protection officer can read and attach to a notification.
    public func markdown() -> String {
        typealias T = AuditText
        var out: [String] = []
        out.append("# Audit report: access to patient data in MedVault")
        out.append("")
        out.append(
            "**Confidential: this report names patients.** It was produced for the vault administrator who unlocked the "
                + "vault with its passphrase. Share it only with those entitled to it (e.g. the data-protection officer) and "
                + "keep it as you would keep patient records.")
        out.append("")
        if !integrity.ok {
            out.append("> **WARNING: THE AUDIT LOG IS DAMAGED.** Checking its seals and chain found "
                + "\(T.plural(integrity.problems.count, "problem")) (listed under *Integrity of the audit log*). Records may have "
                + "been removed, altered or inserted, so this report may be incomplete. A damaged log is itself a sign of a "
                + "possible breach: preserve a copy of `audit/` and treat the incident accordingly.")
            out.append("")
        }
        let since = window.since.map(T.time) ?? "the first record"
        let until = window.until.map(T.time) ?? T.time(generatedAt)
        out.append(T.table(["", ""], [
            ["Vault", "`\(vaultID)` at \(T.cell(vaultPath))"],
            ["Period covered", "\(since) to \(until)"],
            ["Report generated", T.time(generatedAt)],
            ["Audit log", integrity.ok
                ? "intact: \(T.plural(integrity.records, "record")) in \(T.plural(integrity.segments, "segment")), seals and chain verified"
                : "**DAMAGED**: \(T.plural(integrity.problems.count, "problem")); \(T.plural(integrity.records, "record")) could be read"],
        ]))
        out.append("")
        out.append("All times are UTC, from the clock of the machine that holds the vault.")
        out.append("")

        out.append("## Summary")
        out.append("")
        out.append(summarySentence())
        out.append("")

        out.append("## Patients whose data was accessed")
        out.append("")
        if patients.isEmpty {
            out.append("No patient's data was read, exported, searched for or listed in this period.")
        } else {
            out.append("One row per patient and account. *Retrieved*: whole DICOM files (images) sent through the API; "
                + "*metadata*: every attribute except the images; *exported*: files written by `medvault export`; "
                + "*searches* and *listings* showed the patient's identifiers and study details, not images. The name is "
                + "the one the vault holds now (the log records the Patient ID).")
            out.append("")
            var rows: [[String]] = []
            for p in patients {
                let name = p.catalogNames.isEmpty ? "n/a (not in the vault)" : p.catalogNames.map(T.cell).joined(separator: " / ")
                for a in p.accessors {
                    rows.append([T.cell(p.patientID), name, accountCell(a.account, a.role), T.peers(a.peerUIDs, a.peerPIDs),
                                 how(a.figures), instancesCell(a.figures), bytesCell(a.figures), T.time(a.figures.first), T.time(a.figures.last)])
                }
            }
            out.append(T.table(["Patient ID", "Name", "Account", "Peer", "How", "Instances", "Bytes", "First", "Last"], rows))
        }
        out.append("")

        out.append("## Accounts")
        out.append("")
        if accounts.isEmpty {
            out.append("No account acted in this period.")
        } else {
            out.append("API accounts by name and role; `cli` marks the operating-system user who ran a `medvault` command on the vault host.")
            out.append("")
            out.append(T.table(
                ["Account", "Peer", "Patients", "Retrieved", "Metadata", "Exported", "Bytes", "Searches / listings", "Imports", "Refused", "Failed", "Admin", "First", "Last"],
                accounts.map { a in
                    let f = a.figures
                    func count(_ instances: Int, _ requests: Int) -> String { requests == 0 ? "–" : "\(instances) in \(requests)" }
                    return [accountCell(a.account, a.role), T.peers(a.peerUIDs, a.peerPIDs), "\(a.patients)",
                            count(f.instancesRetrieved, f.retrievals), count(f.instancesMetadata, f.metadataRequests),
                            count(f.instancesExported, f.exports), bytesCell(f), "\(f.searches) / \(f.listings)",
                            count(a.instancesImported, a.imports), "\(a.refused)", "\(a.failed)",
                            "\(a.administrativeActions)", T.time(f.first), T.time(f.last)]
                }))
            out.append("")
            out.append("*Retrieved*, *Metadata*, *Exported*, *Imports*: instances, in so many requests or commands.")
        }
        out.append("")

        out.append("## Refused requests")
        out.append("")
        if refused.isEmpty {
            out.append("No request was refused in this period.")
        } else {
            out.append("401: no valid token (missing, wrong, expired, revoked, or a disabled account). 403: a valid account without the right.")
            out.append("")
            out.append(T.table(["Peer", "401", "403", "Accounts (403)", "Processes", "First", "Last"], refused.map { p in
                [T.cell(p.peer), "\(p.unauthenticated)", "\(p.forbidden)", p.accounts.isEmpty ? "–" : p.accounts.map(T.cell).joined(separator: ", "),
                 "\(p.peerPIDs.count)", T.time(p.first), T.time(p.last)]
            }))
        }
        out.append("")
        out.append("### Bursts")
        out.append("")
        if bursts.isEmpty {
            out.append("No burst (\(Self.burstThreshold) or more refusals from one peer within \(Int(Self.burstSeconds)) s).")
        } else {
            out.append("\(Self.burstThreshold) or more refusals from one peer within \(Int(Self.burstSeconds)) s: someone may be guessing tokens, or a client uses a revoked one.")
            out.append("")
            out.append(T.table(["Peer", "From", "To", "Refusals", "Most in 60 s"], bursts.map {
                [T.cell($0.peer), T.time($0.start), T.time($0.end), "\($0.refusals)", "\($0.peakPerMinute)"]
            }))
        }
        out.append("")

        out.append("## Alerts")
        out.append("")
        if alerts.isEmpty {
            out.append("No alert was raised in this period.")
        } else {
            out.append(T.table(["Record", "Time", "Peer", "Alert"], alerts.map { ["\($0.record)", T.time($0.time), T.cell($0.peer), T.cell($0.detail)] }))
        }
        out.append("")

        out.append("## Administrative actions")
        out.append("")
        if administrative.isEmpty {
            out.append("No account, token or key was changed in this period.")
        } else {
            out.append(T.table(["Record", "Time", "By", "Action", "Outcome", "Detail"], administrative.map {
                ["\($0.record)", T.time($0.time), accountCell($0.actor, $0.role), T.cell($0.action), T.cell($0.outcome), T.cell($0.detail)]
            }))
        }
        out.append("")

        out.append("## Integrity of the audit log")
        out.append("")
        if integrity.ok {
            out.append("Every record's seal and the chain linking all \(T.plural(integrity.records, "record")) verified, and the log's "
                + "authenticated head matches its last record: no record was edited, removed, inserted or reordered since it was written.")
        } else {
            out.append("The check found:")
            out.append("")
            for p in integrity.problems { out.append("- \(T.cell(p.segment)) at byte \(p.offset) (record \(p.record)): \(T.cell(p.detail))") }
        }
        out.append("")

        out.append("## What this report cannot show")
        out.append("")
        out.append("- Anything done outside MedVault: someone who has the vault passphrase and the files can decrypt data without leaving a record, and can rewrite the log consistently.")
        out.append("- Bytes sent through the API are not recorded; they show as n/a. Instance counts are recorded. A retrieval is recorded when the answer starts: a client that disconnected early may have received fewer instances.")
        out.append("- Searches and listings record which patients they named, not which attributes were shown.")
        out.append("- What happened to data after it left the vault (exported files, a viewer's cache).")
        out.append("- Peers are identified by operating-system uid and process id on the vault host; the loopback TCP listener cannot see them (shown as unknown).")
        out.append("")
        return out.joined(separator: "\n")
    }

    func summarySentence() -> String {
        typealias T = AuditText
        let s = summary
        var parts: [String] = []
        if s.patients == 0 {
            parts.append("No patient's data was read, exported, searched for or listed in this period.")
        } else {
            var what: [String] = []
            if s.instancesRetrieved > 0 { what.append("\(T.plural(s.instancesRetrieved, "instance")) retrieved through the API") }
            if s.instancesMetadata > 0 { what.append("metadata of \(T.plural(s.instancesMetadata, "instance")) read") }
            if s.instancesExported > 0 { what.append("\(T.plural(s.instancesExported, "instance")) exported to files") }
            if s.searches + s.listings > 0 { what.append("\(T.plural(s.searches + s.listings, "search or listing", "searches or listings")) that showed patient identifiers") }
            var bytesNote = ""
            if s.bytes > 0 || s.recordsWithoutByteCount > 0 {
                bytesNote = s.recordsWithoutByteCount == 0
                    ? " Data sent: \(T.bytes(s.bytes))."
                    : " Data sent: \(s.bytes > 0 ? T.bytes(s.bytes) : "n/a"); bytes of \(T.plural(s.recordsWithoutByteCount, "API request")) not recorded (n/a)."
            }
            parts.append("\(T.plural(s.accounts, "account")) accessed data of \(T.plural(s.patients, "patient")): "
                + what.joined(separator: ", ") + "." + bytesNote)
        }
        parts.append("\(T.plural(s.refused, "request was", "requests were")) refused (\(s.refusedUnauthenticated) unauthenticated, "
            + "\(s.refusedForbidden) forbidden), in \(T.plural(s.bursts, "burst")); \(T.plural(s.alerts, "alert was", "alerts were")) raised; "
            + "\(T.plural(s.administrativeActions, "administrative action")) recorded.")
        if s.failed > 0 { parts.append("\(T.plural(s.failed, "access", "accesses")) failed (not found or error) and delivered no data.") }
        if !integrity.ok { parts.append("**The audit log is damaged; these figures may be incomplete.**") }
        return parts.joined(separator: " ")
    }

    private func accountCell(_ account: String, _ role: String) -> String {
        role == "cli" ? "\(AuditText.cell(account)) (OS user, cli)" : "\(AuditText.cell(account)) (\(AuditText.cell(role)))"
    }

    private func how(_ f: Figures) -> String {
        var parts: [String] = []
        if f.retrievals > 0 { parts.append("retrieved ×\(f.retrievals)") }
        if f.metadataRequests > 0 { parts.append("metadata ×\(f.metadataRequests)") }
        if f.exports > 0 { parts.append("exported ×\(f.exports)") }
        if f.searches > 0 { parts.append("search results ×\(f.searches)") }
        if f.listings > 0 { parts.append("listings ×\(f.listings)") }
        return parts.joined(separator: ", ")
    }

    private func instancesCell(_ f: Figures) -> String {
        let n = f.instancesRetrieved + f.instancesMetadata + f.instancesExported
        guard f.retrievals + f.metadataRequests + f.exports > 0 else { return "n/a" }
        return f.instancesMetadata > 0 ? "\(n) (\(f.instancesMetadata) metadata only)" : "\(n)"
    }

    private func bytesCell(_ f: Figures) -> String {
        switch (f.bytes > 0, f.recordsWithoutByteCount > 0) {
        case (_, false) where f.exports > 0 || f.bytes > 0: AuditText.bytes(f.bytes)
        case (true, true): "\(AuditText.bytes(f.bytes)) + n/a"
        default: "n/a"
        }
    }
}
