import Foundation
import Testing
import TestSupport
@testable import VaultDICOM

@Suite struct DICOMParserTests {
    let corpus = Corpus.shared

    @Test func dictionaryIsLoadedWithoutEnvironment() throws {
        try DICOMParser.checkAvailable()
    }

    @Test func everyValidFileParsesWithTheValuesItWasWrittenWith() throws {
        #expect(corpus.valid.count >= 30)
        for f in corpus.valid {
            let h = try DICOMParser.parse(path: corpus.path(f))
            #expect(h.sopInstanceUID == f.sop_uid, "\(f.path)")
            #expect(h.studyInstanceUID == f.study_uid, "\(f.path)")
            #expect(h.seriesInstanceUID == f.series_uid, "\(f.path)")
            #expect(h[.patientID] == f.patient_id, "\(f.path)")
            #expect(h[.patientName] == f.patient_name, "\(f.path)")
            #expect(h[.patientBirthDate] == f.birth_date, "\(f.path)")
            #expect(h[.accessionNumber] == f.accession, "\(f.path)")
            #expect(h.transferSyntaxUID == f.transfer_syntax, "\(f.path)")
            #expect(h.characterSetConverted, "\(f.path)")
        }
    }

    @Test(arguments: [
        ("charset/latin1-mueller.dcm", "Müller^Jürgen"), ("charset/utf8-mueller.dcm", "Müller^Jürgen"),
        ("charset/utf8-greek.dcm", "Παπαδόπουλος^Νίκος"),
    ])
    func namesAreConvertedToUTF8(path: String, name: String) throws {
        let h = try DICOMParser.parse(path: corpus.root + "/" + path)
        #expect(h[.patientName] == name)
    }

    @Test func transferSyntaxesAndFileMetaAreReported() throws {
        let byPath = Dictionary(uniqueKeysWithValues: corpus.valid.map { ($0.path, $0) })
        let noMeta = try #require(byPath.keys.first { $0.hasSuffix("no-file-meta.dcm") })
        #expect(try DICOMParser.parse(path: corpus.root + "/" + noMeta).hasFileMeta == false)
        let syntaxes = Set(try corpus.valid.map { try DICOMParser.parse(path: corpus.path($0)).transferSyntaxUID })
        // Explicit LE, implicit LE, explicit BE, JPEG lossless, RLE.
        for uid in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5"] {
            #expect(syntaxes.contains(uid), "\(uid)")
        }
        let mr = try #require(corpus.valid.first { $0.path.contains("multiframe") })
        #expect(try DICOMParser.parse(path: corpus.path(mr))[.numberOfFrames] == "5")
    }

    @Test func malformedFilesFailWithASpecificReason() throws {
        #expect(corpus.malformed.count >= 7)
        for f in corpus.malformed {
            do {
                let h = try DICOMParser.parse(path: corpus.path(f))
                // Syntactically valid but unusable: the importer rejects it for the missing UID.
                #expect(h.sopInstanceUID == nil, "\(f.path) parsed although it is \(f.reason ?? "")")
            } catch {
                switch error {
                case .malformed(let reason): #expect(!reason.isEmpty)
                default: Issue.record("\(f.path): unexpected \(error)")
                }
            }
        }
        #expect(throws: DICOMError.malformed("empty file")) {
            try DICOMParser.parse(path: corpus.root + "/malformed/empty.dcm")
        }
        #expect(throws: DICOMError.self) { try DICOMParser.parse(path: corpus.root + "/does-not-exist.dcm") }
    }

    @Test func truncatedPixelDataIsDetectedWithoutLoadingIt() throws {
        let f = try #require(corpus.malformed.first { ($0.reason ?? "").contains("pixel") })
        #expect(throws: DICOMError.self) { try DICOMParser.parse(path: corpus.path(f)) }
    }

    @Test func parsesFromMemoryToo() throws {
        let f = try #require(corpus.valid.first { $0.path.contains("charset/latin1") })
        let bytes = try #require(FileManager.default.contents(atPath: corpus.path(f)))
        let h = try DICOMParser.parse(bytes: Array(bytes))
        #expect(h[.patientName] == "Müller^Jürgen")
        #expect(throws: DICOMError.self) { try DICOMParser.parse(bytes: Array(bytes.prefix(300))) }
        #expect(throws: DICOMError.self) { try DICOMParser.parse(bytes: []) }
    }
}
