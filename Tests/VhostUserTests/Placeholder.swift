import XCTest

final class VhostUserTestsPlaceholder: XCTestCase {}
