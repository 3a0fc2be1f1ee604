// Listings scoped by a study or series UID read only the rows the UID's blind index leads to (the
// whole catalog is never decrypted for them), and give exactly the rows a full listing filtered by
// that UID gives.
import Foundation
import Testing
import TestSupport
@testable import VaultStore

@Suite struct CatalogSelectionTests {
    @Test func studyAndSeriesSelectionsOpenOnlyTheirRowsAndMatchAFilteredFullListing() throws {
        let dir = TempDir("medvault-selection")
        let vault = try makeVault(dir).vault
        _ = try importValidCorpus(into: vault, dir: dir)
        let all = try vault.openCatalog(.all)
        #expect(all.studies.count >= 5 && all.patients.count >= 3)
        let everyInstance = try vault.listInstances()
        for study in Set(everyInstance.map(\.study.studyUID)) {
            let opened = try vault.openCatalog(.study(study))
            #expect(opened.studies.count == 1 && opened.studies.values.first?.record.studyUID == study)
            #expect(opened.patients.count == 1)
            #expect(Set(opened.series.values.map(\.record.seriesUID)) == Set(everyInstance.filter { $0.study.studyUID == study }.map(\.series.seriesUID)))
            #expect(try vault.listInstances(in: .study(study)).map(\.instance.sopInstanceUID)
                == everyInstance.filter { $0.study.studyUID == study }.map(\.instance.sopInstanceUID))
            #expect(try vault.listStudies(in: .study(study)).map(\.instances) == (try vault.listStudies()).filter { $0.study.studyUID == study }.map(\.instances))
        }
        for series in Set(everyInstance.map(\.series.seriesUID)) {
            let opened = try vault.openCatalog(.series(series))
            #expect(opened.series.count == 1 && opened.studies.count == 1 && opened.patients.count == 1)
            #expect(opened.instances.count == everyInstance.filter { $0.series.seriesUID == series }.count)
            #expect(try vault.listSeries(in: .series(series)).map(\.instances) == (try vault.listSeries()).filter { $0.series.seriesUID == series }.map(\.instances))
        }
        // A UID that is not in the vault opens nothing.
        for selection in [CatalogSelection.study("1.2.3.4.5"), .series("1.2.3.4.5")] {
            let opened = try vault.openCatalog(selection)
            #expect(opened.patients.isEmpty && opened.studies.isEmpty && opened.series.isEmpty && opened.instances.isEmpty)
        }
    }
}
