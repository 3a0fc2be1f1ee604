// The audit log's record framing, shared by the log writer, its verifier and the snapshot prefix.
/// Record framing (all integers big-endian):
///   magic "MVAR" (4) ‖ sequence u64 ‖ body length u32 ‖ body (AEAD box) ‖ MAC (32)
/// MAC = keyed BLAKE2b(auditMAC, previous MAC ‖ sequence ‖ body). The first record chains from 32 zero bytes.
/// audit/head = sequence u64 ‖ MAC (32) ‖ keyed BLAKE2b(auditMAC, "head" ‖ sequence ‖ MAC) (32).
package enum AuditFormat {
    package static let magic: [UInt8] = Array("MVAR".utf8)
    package static let headerLength = 4 + 8 + 4
    package static let macLength = 32
    package static let segmentLimit = 4 << 20
    package static let maxBody = 1 << 20

    package static func segmentName(_ n: Int) -> String {
        let digits = String(n)
        return "segment-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".log"
    }

    package static func be64(_ v: UInt64) -> [UInt8] { (0..<8).reversed().map { UInt8((v >> (UInt64($0) * 8)) & 0xFF) } }
    package static func be32(_ v: UInt32) -> [UInt8] { (0..<4).reversed().map { UInt8((v >> (UInt32($0) * 8)) & 0xFF) } }
    package static func read64(_ b: ArraySlice<UInt8>) -> UInt64 { b.reduce(0) { $0 << 8 | UInt64($1) } }
    package static func read32(_ b: ArraySlice<UInt8>) -> UInt32 { b.reduce(0) { $0 << 8 | UInt32($1) } }
}

