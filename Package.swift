// swift-tools-version: 6.1
// MedVault: an encrypted vault for DICOM images. One target per layer; see docs/design.md.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "MedVault",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "medvault", targets: ["medvault"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        // The local API. Traits off: no swift-configuration, no full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // C world: libsodium (system library) and DCMTK behind a plain C header.
        .systemLibrary(
            name: "CSodium", path: "CShims/CSodium", pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]),
        .target(
            name: "CDCMTKShim", path: "CShims/DCMTKShim", publicHeadersPath: "include",
            // zlib: the pre-scan inflates deflated datasets itself (DCMTK links it too). dcmjpeg, dcmjpls and
            // dcmimage(/imgle): frame decoding and rendering (mv_pixels.cpp; docs/pixels.md).
            linkerSettings: [
                .linkedLibrary("dcmimage"), .linkedLibrary("dcmimgle"), .linkedLibrary("dcmjpeg"), .linkedLibrary("dcmjpls"),
                .linkedLibrary("dcmdata"), .linkedLibrary("oflog"), .linkedLibrary("ofstd"), .linkedLibrary("z"),
            ]),

        .target(name: "CSysShim", path: "CShims/SysShim", publicHeadersPath: "include"),

        // Swift layers.
        .target(name: "VaultCrypto", dependencies: ["CSodium"], swiftSettings: strict),
        .target(name: "VaultDICOM", dependencies: ["CDCMTKShim"], swiftSettings: strict),
        // I/O primitives: descriptors, the durable-write recipe, the writer lock, typed I/O errors.
        .target(name: "VaultIO", dependencies: ["VaultCrypto", "CSysShim"], swiftSettings: strict),
        // On-disk formats: blob, snapshot set and manifest, audit framing, vault layout.
        .target(name: "VaultFormats", dependencies: ["VaultIO", "VaultCrypto"], swiftSettings: strict),
        // Keys: vault.json and its slots, the keyring below the master key, associated-data builders.
        .target(name: "VaultKeys", dependencies: ["VaultIO", "VaultFormats", "VaultCrypto"], swiftSettings: strict),
        // Audit: typed events, the chained log, the breach report's model.
        .target(name: "VaultAudit", dependencies: ["VaultIO", "VaultFormats", "VaultKeys", "VaultCrypto"], swiftSettings: strict),
        // The catalog: schema and migrations, sealed records, and every SQL statement; the pool is private.
        .target(
            name: "VaultCatalog", dependencies: ["VaultIO", "VaultFormats", "VaultCrypto", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .target(
            name: "VaultStore",
            dependencies: ["VaultIO", "VaultFormats", "VaultKeys", "VaultAudit", "VaultCatalog", "VaultCrypto", "VaultDICOM", "CSysShim"],
            swiftSettings: strict),
        .target(
            name: "VaultServer",
            dependencies: [
                "VaultStore", "VaultDICOM", "VaultFormats", "VaultKeys", "VaultAudit", "VaultCatalog", "CSysShim", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),
        // Backups that never hold a key: targets, sync, verify (docs/backup.md). No dependency on the
        // keyed engine, so the compiler proves the backup job cannot open a key.
        .target(name: "VaultBackup", dependencies: ["VaultFormats", "VaultIO", "VaultCrypto", "CSysShim"], swiftSettings: strict),
        // Restore: a backup's snapshot set back into a vault; needs a passphrase, so it sits on the engine.
        .target(name: "VaultRestore", dependencies: ["VaultBackup", "VaultStore", "VaultAudit", "VaultKeys", "VaultFormats", "VaultIO", "VaultCrypto"], swiftSettings: strict),
        .executableTarget(
            name: "medvault",
            // VaultCrypto only for SecureBytes: the passphrase is read straight into secure memory.
            dependencies: [
                "VaultStore", "VaultServer", "VaultBackup", "VaultRestore", "VaultCrypto", "VaultIO", "VaultFormats", "VaultKeys", "VaultAudit", "VaultCatalog", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // Tests run on real bytes: real libsodium, real DCMTK, real SQLite, real processes.
        // Shared test helpers: temp dirs, the generated DICOM corpus (tools/gen-dicom.py), processes.
        .target(name: "TestSupport", dependencies: ["VaultStore", "VaultAudit", "VaultKeys", "VaultCatalog", "VaultFormats", "VaultIO", "VaultCrypto"], path: "Tests/Support", swiftSettings: strict),
        .testTarget(name: "VaultCryptoTests", dependencies: ["VaultCrypto"], swiftSettings: strict),
        .testTarget(name: "VaultDICOMTests", dependencies: ["VaultDICOM", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "VaultStoreTests", dependencies: ["VaultStore", "VaultAudit", "VaultKeys", "VaultCatalog", "VaultIO", "VaultFormats", "VaultCrypto", "VaultDICOM", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "MedVaultCLITests", dependencies: ["TestSupport", "VaultIO"], swiftSettings: strict),
        // The API server in process (HummingbirdTesting), over a real vault; the live-socket tests are in MedVaultCLITests.
        .testTarget(
            name: "VaultServerTests",
            dependencies: [
                "VaultServer", "TestSupport", "VaultStore", "VaultAudit", "VaultCatalog", "VaultDICOM", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict),
        // The CLI's own logic (time parsing, the report's Markdown), in process.
        .testTarget(name: "MedVaultCLIUnitTests", dependencies: ["medvault", "TestSupport", "VaultStore", "VaultAudit", "VaultKeys", "VaultCatalog"], swiftSettings: strict),
        .testTarget(
            name: "VaultBackupTests",
            dependencies: ["VaultBackup", "VaultRestore", "VaultStore", "VaultAudit", "VaultKeys", "VaultCatalog", "VaultIO", "VaultFormats", "VaultCrypto", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
    ],
    cxxLanguageStandard: .cxx17
)
