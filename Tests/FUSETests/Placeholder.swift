import XCTest

final class FUSETestsPlaceholder: XCTestCase {}
