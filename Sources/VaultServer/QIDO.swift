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
                out += "{\"Alphabetic\":"
                Self.appendString(name, to: &out)
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

    /// A query value by keyword or tag, nil when absent or empty.
    static func value(_ request: Request, _ a: Attribute) -> String? {
        value(request, a.rawValue, a.tag)
    }

    static func value(_ request: Request, _ key: String, _ tag: String) -> String? {
        let q = request.uri.queryParameters
        return (q[key[...]] ?? q[tag[...]]).map(String.init).flatMap { $0.isEmpty ? nil : $0 }
    }

    static func page<T>(_ items: [T], _ request: Request) -> [T] {
        let offset = max(0, Int(value(request, "offset", "offset") ?? "") ?? 0)
        let limit = max(0, Int(value(request, "limit", "limit") ?? "") ?? Int.max)
        return Array(items.dropFirst(offset).prefix(limit))
    }

    /// What the answer keeps: the level's defaults, the matching keys used, and `includefield` values
    /// (repeated and/or comma-separated; `all` for everything). Unknown ones are reported, not fatal.
    struct Selection {
        var all = false
        var wanted: Set<Attribute>
        var unsupported: [String] = []

        init(_ request: Request, defaults: Set<Attribute>) {
            wanted = defaults
            for a in Attribute.allCases where QIDO.value(request, a) != nil { wanted.insert(a) }
            let q = request.uri.queryParameters
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

    static func answer(
        _ objects: [DICOMJSONObject], _ selection: Selection, patients: [String], studies: [String], _ context: VaultRequestContext
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
        if !selection.unsupported.isEmpty {
            // PS3.18 §8.3.4.4: an attribute the origin server cannot return is named in a Warning.
            let names = selection.unsupported.map { $0.filter { $0.isLetter || $0.isNumber } }.joined(separator: ", ")
            headers[HTTPField.Name("Warning")!] = "299 MedVault: \"The fields: \(names) are not supported and were not returned\""
        }
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

    /// GET /dicom-web/studies with PatientID, PatientName (* and ? wildcards), StudyDate (a date or a
    /// range a-b, a-, -b), ModalitiesInStudy, StudyInstanceUID (a list), AccessionNumber, limit, offset.
    static func studies(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        var studies = try vault.listStudies(patientID: value(request, .patientID))
        if let name = value(request, .patientName) {
            studies = studies.filter { Wildcard.matches(pattern: name, $0.patient.name) }
        }
        if let range = value(request, .studyDate) {
            studies = studies.filter { DateRange(range)?.contains($0.study.date) ?? false }
        }
        if let modality = value(request, .modalitiesInStudy) {
            let wanted = Set(modality.split(separator: ",").map { String($0) })
            studies = studies.filter { !wanted.isDisjoint(with: $0.modalities) }
        }
        if let uid = value(request, .studyInstanceUID) {
            let wanted = Set(uid.split(separator: ",").map { String($0) })
            studies = studies.filter { wanted.contains($0.study.studyUID) }
        }
        if let acc = value(request, .accessionNumber) { studies = studies.filter { $0.study.accessionNumber == acc } }
        let shown = page(studies, request)
        return answer(shown.map { s in
            var o = DICOMJSONObject()
            patientFields(&o, s.patient)
            studyFields(&o, s.study)
            o.set(.modalitiesInStudy, s.modalities)
            o.set(.numberOfStudyRelatedSeries, count: s.series)
            o.set(.numberOfStudyRelatedInstances, count: s.instances)
            return o
        }, Selection(request, defaults: studyDefaults), patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), context)
    }

    /// GET /dicom-web/series and /studies/{s}/series.
    static func series(_ vault: Vault, _ request: Request, _ context: VaultRequestContext, study: String?) throws -> Response {
        var rows = try vault.listSeries(patientID: value(request, .patientID))
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        if let uid = value(request, .studyInstanceUID) { rows = rows.filter { $0.study.studyUID == uid } }
        if let name = value(request, .patientName) { rows = rows.filter { Wildcard.matches(pattern: name, $0.patient.name) } }
        if let range = value(request, .studyDate) { rows = rows.filter { DateRange(range)?.contains($0.study.date) ?? false } }
        if let acc = value(request, .accessionNumber) { rows = rows.filter { $0.study.accessionNumber == acc } }
        if let m = value(request, .modality) { rows = rows.filter { $0.series.modality == m } }
        if let uid = value(request, .seriesInstanceUID) { rows = rows.filter { $0.series.seriesUID == uid } }
        if let n = value(request, .seriesNumber) { rows = rows.filter { $0.series.number == n } }
        let shown = page(rows, request)
        return answer(shown.map { s in
            var o = DICOMJSONObject()
            patientFields(&o, s.patient)
            studyFields(&o, s.study)
            seriesFields(&o, s.series)
            o.set(.numberOfSeriesRelatedInstances, count: s.instances)
            return o
        }, Selection(request, defaults: seriesDefaults), patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), context)
    }

    /// GET /dicom-web/instances and /studies/{s}/series/{se}/instances.
    static func instances(_ vault: Vault, _ request: Request, _ context: VaultRequestContext, study: String?, series: String?) throws -> Response {
        var rows = try vault.listInstances(patientID: value(request, .patientID))
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        if let series { rows = rows.filter { $0.series.seriesUID == series } }
        if let uid = value(request, .studyInstanceUID) { rows = rows.filter { $0.study.studyUID == uid } }
        if let uid = value(request, .seriesInstanceUID) { rows = rows.filter { $0.series.seriesUID == uid } }
        if let uid = value(request, .sopInstanceUID) { rows = rows.filter { $0.instance.sopInstanceUID == uid } }
        if let m = value(request, .modality) { rows = rows.filter { $0.series.modality == m } }
        if let n = value(request, .instanceNumber) { rows = rows.filter { $0.instance.number == n } }
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
        }, Selection(request, defaults: instanceDefaults), patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID), context)
    }
}
