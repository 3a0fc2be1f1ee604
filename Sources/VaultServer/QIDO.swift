// QIDO-RS (PS3.18 §10.6): search for studies, series and instances; answers application/dicom+json.
// Each level builds every attribute the catalog holds, then keeps the level's default return set, the
// matching keys, and what `includefield` asks for (or everything for `includefield=all`).
import VaultCatalog
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import VaultStore

/// The attributes QIDO can return: keyword, tag and VR. Only what the sealed catalog records.
enum Attribute: String, CaseIterable {
    case patientName = "PatientName", patientID = "PatientID", issuerOfPatientID = "IssuerOfPatientID"
    case patientBirthDate = "PatientBirthDate", patientSex = "PatientSex"
    case studyDate = "StudyDate", studyTime = "StudyTime", accessionNumber = "AccessionNumber"
    case modalitiesInStudy = "ModalitiesInStudy", referringPhysicianName = "ReferringPhysicianName"
    case institutionName = "InstitutionName", studyDescription = "StudyDescription"
    case studyInstanceUID = "StudyInstanceUID", studyID = "StudyID"
    case numberOfStudyRelatedSeries = "NumberOfStudyRelatedSeries"
    case numberOfStudyRelatedInstances = "NumberOfStudyRelatedInstances"
    case modality = "Modality", seriesInstanceUID = "SeriesInstanceUID", seriesNumber = "SeriesNumber"
    case seriesDescription = "SeriesDescription", bodyPartExamined = "BodyPartExamined"
    case performingPhysicianName = "PerformingPhysicianName"
    case numberOfSeriesRelatedInstances = "NumberOfSeriesRelatedInstances"
    case sopClassUID = "SOPClassUID", sopInstanceUID = "SOPInstanceUID", instanceNumber = "InstanceNumber"
    case rows = "Rows", columns = "Columns", numberOfFrames = "NumberOfFrames"
    case availableTransferSyntaxUID = "AvailableTransferSyntaxUID"

    var tag: String {
        switch self {
        case .patientName: "00100010"
        case .patientID: "00100020"
        case .issuerOfPatientID: "00100021"
        case .patientBirthDate: "00100030"
        case .patientSex: "00100040"
        case .studyDate: "00080020"
        case .studyTime: "00080030"
        case .accessionNumber: "00080050"
        case .modalitiesInStudy: "00080061"
        case .referringPhysicianName: "00080090"
        case .institutionName: "00080080"
        case .studyDescription: "00081030"
        case .studyInstanceUID: "0020000D"
        case .studyID: "00200010"
        case .numberOfStudyRelatedSeries: "00201206"
        case .numberOfStudyRelatedInstances: "00201208"
        case .modality: "00080060"
        case .seriesInstanceUID: "0020000E"
        case .seriesNumber: "00200011"
        case .seriesDescription: "0008103E"
        case .bodyPartExamined: "00180015"
        case .performingPhysicianName: "00081050"
        case .numberOfSeriesRelatedInstances: "00201209"
        case .sopClassUID: "00080016"
        case .sopInstanceUID: "00080018"
        case .instanceNumber: "00200013"
        case .rows: "00280010"
        case .columns: "00280011"
        case .numberOfFrames: "00280008"
        case .availableTransferSyntaxUID: "00083002"
        }
    }

    var vr: String {
        switch self {
        case .patientName, .referringPhysicianName, .performingPhysicianName: "PN"
        case .patientID, .issuerOfPatientID, .institutionName, .studyDescription, .seriesDescription: "LO"
        case .patientBirthDate, .studyDate: "DA"
        case .patientSex, .modalitiesInStudy, .modality, .bodyPartExamined: "CS"
        case .studyTime: "TM"
        case .accessionNumber, .studyID: "SH"
        case .studyInstanceUID, .seriesInstanceUID, .sopClassUID, .sopInstanceUID, .availableTransferSyntaxUID: "UI"
        case .numberOfStudyRelatedSeries, .numberOfStudyRelatedInstances, .numberOfSeriesRelatedInstances, .seriesNumber,
            .instanceNumber, .numberOfFrames:
            "IS"
        case .rows, .columns: "US"
        }
    }

    /// By keyword (case-sensitive, as PS3.6 spells it) or by 8-digit hex tag.
    init?(query: String) {
        if let a = Attribute(rawValue: query) {
            self = a
        } else if let a = Attribute.allCases.first(where: { $0.tag == query.uppercased() }) {
            self = a
        } else {
            return nil
        }
    }
}

/// A DICOM JSON object (PS3.18 §F.2), written by hand: tags in ascending order, strings escaped.
/// (Foundation's JSONSerialization dominated a QIDO answer's cost.)
struct DICOMJSONObject {
    enum Value {
        case strings([String])
        case person(String)
        case integer(Int)
    }
    private(set) var fields: [Attribute: Value] = [:]

    mutating func set(_ a: Attribute, _ v: String) { if !v.isEmpty { fields[a] = .strings([v]) } }
    mutating func set(_ a: Attribute, _ v: [String]) { if !v.isEmpty { fields[a] = .strings(v) } }
    mutating func set(_ a: Attribute, count: Int) { fields[a] = .integer(count) }
    mutating func setPerson(_ a: Attribute, _ v: String) { if !v.isEmpty { fields[a] = .person(v) } }
    /// IS and US values: numbers in JSON, dropped when the stored text is not a number.
    mutating func setNumber(_ a: Attribute, _ v: String) {
        if let n = Int(v.trimmingCharacters(in: .whitespaces)) { fields[a] = .integer(n) }
    }

    mutating func keep(only wanted: Set<Attribute>) { fields = fields.filter { wanted.contains($0.key) } }

    func write(into out: inout String) {
        out += "{"
        for (i, (a, v)) in fields.sorted(by: { $0.key.tag < $1.key.tag }).enumerated() {
            if i > 0 { out += "," }
            out += "\"\(a.tag)\":{\"vr\":\"\(a.vr)\",\"Value\":["
            switch v {
            case .strings(let values):
                for (j, s) in values.enumerated() {
                    if j > 0 { out += "," }
                    Self.appendString(s, to: &out)
                }
            case .person(let name):
                // PS3.18 F.2.2: one key per non-empty component group.
                let n = PersonName(name)
                let groups = [("Alphabetic", n.alphabetic), ("Ideographic", n.ideographic), ("Phonetic", n.phonetic)].filter { !$0.1.isEmpty }
                out += "{"
                for (k, (key, group)) in groups.enumerated() {
                    if k > 0 { out += "," }
                    out += "\"\(key)\":"
                    Self.appendString(group, to: &out)
                }
                out += "}"
            case .integer(let n):
                out += String(n)
            }
            out += "]}"
        }
        out += "}"
    }

    static func appendString(_ s: String, to out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}

extension PatientRecord { static let blank = PatientRecord(name: "", patientID: "", issuer: "", birthDate: "", sex: "", characterSetConverted: true) }
extension StudyRecord {
    static let blank = StudyRecord(studyUID: "", date: "", time: "", accessionNumber: "", referringPhysician: "", institution: "", description: "", studyID: "")
}
extension SeriesRecord { static let blank = SeriesRecord(seriesUID: "", modality: "", number: "", description: "", bodyPart: "", performingPhysician: "") }
extension InstanceRecord {
    static let blank = InstanceRecord(sopInstanceUID: "", sopClassUID: "", number: "", transferSyntaxUID: "", frames: "", rows: "", columns: "")
}

/// One row a QIDO level matches on: what the catalog holds for a study, series or instance.
struct QIDORow {
    var patient: PatientRecord
    var study: StudyRecord
    var series: SeriesRecord? = nil
    var instance: InstanceRecord? = nil
    /// ModalitiesInStudy, at study level only.
    var modalities: [String]? = nil

    /// The values an attribute has in this row; nil when this level does not hold it (not a matching key).
    func values(_ a: Attribute) -> [String]? {
        switch a {
        case .patientName: [patient.name]
        case .patientID: [patient.patientID]
        case .issuerOfPatientID: [patient.issuer]
        case .patientBirthDate: [patient.birthDate]
        case .patientSex: [patient.sex]
        case .studyDate: [study.date]
        case .studyTime: [study.time]
        case .accessionNumber: [study.accessionNumber]
        case .referringPhysicianName: [study.referringPhysician]
        case .institutionName: [study.institution]
        case .studyDescription: [study.description]
        case .studyInstanceUID: [study.studyUID]
        case .studyID: [study.studyID]
        case .modalitiesInStudy: modalities
        case .modality: series.map { [$0.modality] }
        case .seriesInstanceUID: series.map { [$0.seriesUID] }
        case .seriesNumber: series.map { [$0.number] }
        case .seriesDescription: series.map { [$0.description] }
        case .bodyPartExamined: series.map { [$0.bodyPart] }
        case .performingPhysicianName: series.map { [$0.performingPhysician] }
        case .sopClassUID: instance.map { [$0.sopClassUID] }
        case .sopInstanceUID: instance.map { [$0.sopInstanceUID] }
        case .instanceNumber: instance.map { [$0.number] }
        case .rows: instance.map { [$0.rows] }
        case .columns: instance.map { [$0.columns] }
        case .numberOfFrames: instance.map { [$0.frames] }
        case .availableTransferSyntaxUID: instance.map { [$0.transferSyntaxUID] }
        case .numberOfStudyRelatedSeries, .numberOfStudyRelatedInstances, .numberOfSeriesRelatedInstances: nil
        }
    }
}

/// One matching key of a request: its attribute and its values (every repeated parameter, each split at
/// backslashes, and for UIDs and code strings at commas too). A row matches when any value matches.
struct MatchKey {
    enum Test {
        case exact(Set<String>)
        case wildcard([String], caseSensitive: Bool)
        case person([String])
        case dates([DateRange])
        case times([TimeRange])
        case numbers(Set<Int>)
    }
    let attribute: Attribute
    let test: Test

    /// Free-text attributes matched without regard to case, as viewers' search boxes expect (PS3.4
    /// leaves case to the attribute; identifiers and code strings stay case-sensitive).
    static let caseInsensitive: Set<Attribute> = [.studyDescription, .seriesDescription, .institutionName]

    init(_ a: Attribute, _ raw: [String]) throws(APIError) {
        attribute = a
        var values: [String] = []
        for r in raw {
            for v in r.split(separator: "\\", omittingEmptySubsequences: false) {
                let parts = ["UI", "CS"].contains(a.vr) ? v.split(separator: ",").map(String.init) : [String(v)]
                for p in parts where !p.isEmpty && !values.contains(p) { values.append(p) }
            }
        }
        switch a.vr {
        case "UI": test = .exact(Set(values))
        case "PN": test = .person(values)
        case "DA":
            var ranges: [DateRange] = []
            for v in values {
                guard let r = DateRange(v) else { throw APIError(.badRequest, "\(a.rawValue): expected a date YYYYMMDD or a range A-B, A-, -B") }
                ranges.append(r)
            }
            test = .dates(ranges)
        case "TM":
            var ranges: [TimeRange] = []
            for v in values {
                guard let r = TimeRange(v) else { throw APIError(.badRequest, "\(a.rawValue): expected a time HH[MM[SS[.FFFFFF]]] or a range A-B, A-, -B") }
                ranges.append(r)
            }
            test = .times(ranges)
        case "IS", "US":
            var numbers = Set<Int>()
            for v in values {
                guard let n = Int(v.trimmingCharacters(in: .whitespaces)) else { throw APIError(.badRequest, "\(a.rawValue): expected a number") }
                numbers.insert(n)
            }
            test = .numbers(numbers)
        default:
            test = values.contains(where: Wildcard.hasWildcard) || Self.caseInsensitive.contains(a)
                ? .wildcard(values, caseSensitive: !Self.caseInsensitive.contains(a)) : .exact(Set(values))
        }
    }

    /// No values (`PatientID=`): universal matching, the key only asks for the attribute to be returned.
    var isUniversal: Bool {
        switch test {
        case .exact(let v): v.isEmpty
        case .numbers(let v): v.isEmpty
        case .wildcard(let v, _), .person(let v): v.isEmpty
        case .dates(let v): v.isEmpty
        case .times(let v): v.isEmpty
        }
    }

    func matches(_ row: QIDORow) -> Bool {
        guard !isUniversal else { return true }
        guard let held = row.values(attribute) else { return false }
        return held.contains { value in
            switch test {
            case .exact(let wanted): wanted.contains(value)
            case .wildcard(let patterns, let cs): patterns.contains { Wildcard.matches(pattern: $0, value, caseSensitive: cs) }
            case .person(let patterns): patterns.contains { PersonName.matches(pattern: $0, value) }
            case .dates(let ranges): ranges.contains { $0.contains(value) }
            case .times(let ranges): ranges.contains { $0.contains(value) }
            case .numbers(let wanted): Int(value.trimmingCharacters(in: .whitespaces)).map { wanted.contains($0) } ?? false
            }
        }
    }

    /// Exact Patient IDs, for the blind index: nil when the key has a wildcard (all patients are read).
    var exactValues: Set<String>? {
        if case .exact(let v) = test, !v.isEmpty { return v }
        return nil
    }
}

/// A QIDO request's matching keys, and what it asked that this server does not do, for the Warning header
/// (PS3.18 §8.3.4.4: say so rather than silently ignore it).
struct QIDOQuery {
    var keys: [MatchKey] = []
    var warnings: [String] = []
    static let controls: Set<String> = ["limit", "offset", "includefield", "fuzzymatching"]

    init(_ request: Request, level: QIDORow) throws(APIError) {
        var raw: [Attribute: [String]] = [:]
        var unknown: [String] = [], ignored: [String] = []
        for (key, value) in request.uri.queryParameters {
            let k = String(key)
            if Self.controls.contains(k) { continue }
            guard let a = Attribute(query: k) else {
                if !unknown.contains(k) { unknown.append(k) }
                continue
            }
            guard level.values(a) != nil else {
                if !ignored.contains(a.rawValue) { ignored.append(a.rawValue) }
                continue
            }
            raw[a, default: []].append(String(value))
        }
        for a in Attribute.allCases { if let v = raw[a] { keys.append(try MatchKey(a, v)) } }
        if !unknown.isEmpty { warnings.append("Unknown query keys were ignored: \(unknown.joined(separator: ", "))") }
        if !ignored.isEmpty { warnings.append("These attributes are not matching keys at this level and were ignored: \(ignored.joined(separator: ", "))") }
        if request.uri.queryParameters.getAll("fuzzymatching").contains(where: { $0.lowercased() == "true" }) {
            warnings.append("fuzzymatching is not supported: names are matched case-insensitively with * and ? wildcards only")
        }
    }

    func matches(_ row: QIDORow) -> Bool { keys.allSatisfy { $0.matches(row) } }

    /// The exact Patient IDs asked for, if any: the catalog opens only those patients (blind index).
    var patientIDs: [String?] {
        guard let key = keys.first(where: { $0.attribute == .patientID }), let ids = key.exactValues else { return [nil] }
        return ids.sorted()
    }

    /// What the catalog opens for this search: the series or study of the URL, else the exact Series
    /// or Study Instance UIDs asked for, else the exact Patient IDs, each through its blind index; only
    /// a search with none of these opens the whole catalog. The matching keys still filter the rows.
    func selections(study: String? = nil, series: String? = nil, seriesLevel: Bool) -> [CatalogSelection] {
        func exact(_ a: Attribute) -> [String]? { keys.first { $0.attribute == a }?.exactValues.map { $0.sorted() } }
        if let series { return [.series(series)] }
        if seriesLevel, let uids = exact(.seriesInstanceUID) { return uids.map { .series($0) } }
        if let study { return [.study(study)] }
        if let uids = exact(.studyInstanceUID) { return uids.map { .study($0) } }
        return patientIDs.map { $0.map { .patientID($0) } ?? .all }
    }
}

enum QIDO {
    /// PS3.18 Table 6.7.1-2 default return attributes we hold, per level (plus StudyDescription and
    /// SeriesDescription, which viewers list), and the patient/study keys a cross-study search needs.
    static let studyDefaults: Set<Attribute> = [
        .studyDate, .studyTime, .accessionNumber, .modalitiesInStudy, .referringPhysicianName, .patientName, .patientID,
        .patientBirthDate, .patientSex, .studyInstanceUID, .studyID, .numberOfStudyRelatedSeries,
        .numberOfStudyRelatedInstances, .studyDescription,
    ]
    static let seriesDefaults: Set<Attribute> = [
        .modality, .seriesDescription, .seriesInstanceUID, .seriesNumber, .numberOfSeriesRelatedInstances,
        .studyInstanceUID, .patientName, .patientID, .patientBirthDate, .patientSex,
    ]
    static let instanceDefaults: Set<Attribute> = [
        .sopClassUID, .sopInstanceUID, .instanceNumber, .rows, .columns, .numberOfFrames, .availableTransferSyntaxUID,
        .studyInstanceUID, .seriesInstanceUID, .modality, .patientName, .patientID, .patientBirthDate, .patientSex,
    ]

    /// A query value by name, nil when absent or empty.
    static func value(_ request: Request, _ key: String, _ tag: String) -> String? {
        let q = request.uri.queryParameters
        return (q[key[...]] ?? q[tag[...]]).map(String.init).flatMap { $0.isEmpty ? nil : $0 }
    }

    static func page<T>(_ items: [T], _ request: Request) -> [T] {
        let offset = max(0, Int(value(request, "offset", "offset") ?? "") ?? 0)
        let limit = max(0, Int(value(request, "limit", "limit") ?? "") ?? Int.max)
        return Array(items.dropFirst(offset).prefix(limit))
    }

    /// What the answer keeps: the level's defaults, every matching key given (even empty: PS3.18 asks
    /// for it to be returned), and `includefield` values (repeated and/or comma-separated; `all` for
    /// everything). Unknown ones are reported, not fatal.
    struct Selection {
        var all = false
        var wanted: Set<Attribute>
        var unsupported: [String] = []

        init(_ request: Request, defaults: Set<Attribute>) {
            wanted = defaults
            let q = request.uri.queryParameters
            for a in Attribute.allCases where q[a.rawValue[...]] != nil || q[a.tag[...]] != nil { wanted.insert(a) }
            for raw in q.getAll("includefield") {
                for item in raw.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
                    if item == "all" {
                        all = true
                    } else if let a = Attribute(query: item) {
                        wanted.insert(a)
                    } else {
                        unsupported.append(item)
                    }
                }
            }
        }
    }

    /// `299 <agent> "text"` (RFC 9111 §5.5 form, as PS3.18 uses it): the agent is the host the client
    /// addressed, as far as it is a plain host name.
    static func warning(_ text: String, _ request: Request) -> String {
        let host = (request.head.authority ?? "").filter { $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0)) }
        let clean = text.filter { $0 != "\"" && $0 != "\\" && $0.isASCII && !$0.isNewline }
        return "299 \(host.isEmpty ? "MedVault" : host) \"\(clean)\""
    }

    static func answer(
        _ objects: [DICOMJSONObject], _ selection: Selection, _ query: QIDOQuery, patients: [String], studies: [String],
        _ request: Request, _ context: VaultRequestContext
    ) -> Response {
        var body = "["
        for (i, o) in objects.enumerated() {
            if i > 0 { body += "," }
            var o = o
            if !selection.all { o.keep(only: selection.wanted) }
            o.write(into: &body)
        }
        body += "]"
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        var warnings = query.warnings
        if !selection.unsupported.isEmpty {
            // PS3.18 §8.3.4.4: an attribute the origin server cannot return is named in a Warning.
            let names = selection.unsupported.map { $0.filter { $0.isLetter || $0.isNumber } }.joined(separator: ", ")
            warnings.append("The fields: \(names) are not supported and were not returned")
        }
        for w in warnings { headers.append(HTTPField(name: .warning, value: warning(w, request))) }
        context.recordDisclosure(studies: studies, patients: patients)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func patientFields(_ o: inout DICOMJSONObject, _ p: PatientRecord) {
        o.setPerson(.patientName, p.name)
        o.set(.patientID, p.patientID)
        o.set(.issuerOfPatientID, p.issuer)
        o.set(.patientBirthDate, p.birthDate)
        o.set(.patientSex, p.sex)
    }

    static func studyFields(_ o: inout DICOMJSONObject, _ s: StudyRecord) {
        o.set(.studyDate, s.date)
        o.set(.studyTime, s.time)
        o.set(.accessionNumber, s.accessionNumber)
        o.setPerson(.referringPhysicianName, s.referringPhysician)
        o.set(.institutionName, s.institution)
        o.set(.studyDescription, s.description)
        o.set(.studyInstanceUID, s.studyUID)
        o.set(.studyID, s.studyID)
    }

    static func seriesFields(_ o: inout DICOMJSONObject, _ s: SeriesRecord) {
        o.set(.modality, s.modality)
        o.set(.seriesInstanceUID, s.seriesUID)
        o.setNumber(.seriesNumber, s.number)
        o.set(.seriesDescription, s.description)
        o.set(.bodyPartExamined, s.bodyPart)
        o.setPerson(.performingPhysicianName, s.performingPhysician)
    }

    /// The rows of each selection (`QIDOQuery.selections`).
    static func fetch<T>(_ selections: [CatalogSelection], _ list: (CatalogSelection) throws -> [T]) throws -> [T] {
        var out: [T] = []
        for selection in selections { out += try list(selection) }
        return out
    }

    /// GET /dicom-web/studies: every attribute the catalog holds for a study is a matching key (docs/api.md).
    /// A search over the whole vault (no UID or exact Patient ID to go by) filters `index`, kept in memory.
    static func studies(_ vault: Vault, _ request: Request, _ context: VaultRequestContext, index: StudySearchIndex? = nil) throws -> Response {
        let blank = QIDORow(patient: .blank, study: .blank, modalities: [])
        let query = try QIDOQuery(request, level: blank)
        let selections = query.selections(seriesLevel: false)
        let candidates =
            if selections == [.all], let index { try index.allStudies() } else { try fetch(selections) { try vault.listStudies(in: $0) } }
        let studies = candidates.filter {
            query.matches(QIDORow(patient: $0.patient, study: $0.study, modalities: $0.modalities))
        }
        let shown = page(studies, request)
        return answer(shown.map { s in
            var o = DICOMJSONObject()
            patientFields(&o, s.patient)
            studyFields(&o, s.study)
            o.set(.modalitiesInStudy, s.modalities)
            o.set(.numberOfStudyRelatedSeries, count: s.series)
            o.set(.numberOfStudyRelatedInstances, count: s.instances)
            return o
        }, Selection(request, defaults: studyDefaults), query, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), request, context)
    }

    /// GET /dicom-web/series and /studies/{s}/series.
    static func series(_ vault: Vault, _ request: Request, _ context: VaultRequestContext, study: String?) throws -> Response {
        let query = try QIDOQuery(request, level: QIDORow(patient: .blank, study: .blank, series: .blank))
        var rows = try fetch(query.selections(study: study, seriesLevel: true)) { try vault.listSeries(in: $0) }
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        rows = rows.filter { query.matches(QIDORow(patient: $0.patient, study: $0.study, series: $0.series)) }
        let shown = page(rows, request)
        return answer(shown.map { s in
            var o = DICOMJSONObject()
            patientFields(&o, s.patient)
            studyFields(&o, s.study)
            seriesFields(&o, s.series)
            o.set(.numberOfSeriesRelatedInstances, count: s.instances)
            return o
        }, Selection(request, defaults: seriesDefaults), query, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), request, context)
    }

    /// GET /dicom-web/instances, /studies/{s}/instances and /studies/{s}/series/{se}/instances.
    static func instances(_ vault: Vault, _ request: Request, _ context: VaultRequestContext, study: String?, series: String?) throws -> Response {
        let query = try QIDOQuery(request, level: QIDORow(patient: .blank, study: .blank, series: .blank, instance: .blank))
        var rows = try fetch(query.selections(study: study, series: series, seriesLevel: true)) { try vault.listInstances(in: $0) }
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        if let series { rows = rows.filter { $0.series.seriesUID == series } }
        rows = rows.filter { query.matches(QIDORow(patient: $0.patient, study: $0.study, series: $0.series, instance: $0.instance)) }
        let shown = page(rows, request)
        return answer(shown.map { i in
            var o = DICOMJSONObject()
            patientFields(&o, i.patient)
            studyFields(&o, i.study)
            seriesFields(&o, i.series)
            o.set(.sopClassUID, i.instance.sopClassUID)
            o.set(.sopInstanceUID, i.instance.sopInstanceUID)
            o.setNumber(.instanceNumber, i.instance.number)
            o.setNumber(.rows, i.instance.rows)
            o.setNumber(.columns, i.instance.columns)
            o.setNumber(.numberOfFrames, i.instance.frames)
            o.set(.availableTransferSyntaxUID, i.instance.transferSyntaxUID)
            return o
        }, Selection(request, defaults: instanceDefaults), query, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), request, context)
    }
}
