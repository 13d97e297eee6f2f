// swift-tools-version:6.0
// The daemon and its libraries use no Foundation and no package dependencies:
// hosts run hundreds of daemons, so size and idle memory matter.
import PackageDescription

// The request path crosses modules (VhostUser -> virtiofsd -> FUSE -> Passthrough)
// and the dispatcher is generic over reader, writer and filesystem: with whole
// cross-module optimisation the executable specialises `Server` for the chain
// reader/writer and `PassthroughFileSystem` instead of calling through witness
// tables. Release only: it slows the build and debug builds gain nothing.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "swift-virtiofsd",
    products: [
        .executable(name: "virtiofsd", targets: ["virtiofsd"]),
        .executable(name: "virtiofsd-bench", targets: ["virtiofsd-bench"]),
    ],
    targets: [
        // C: syscalls and constants Swift cannot reach, and the kernel's wire structs.
        .target(name: "CVirtioFS"),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCapNG", pkgConfig: "libcap-ng",
                       providers: [.apt(["libcap-ng-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),

        // The option model: every option type and default, once. Pure.
        .target(name: "Options", dependencies: ["XattrMap", "IDTranslation"]),
        // Errno, one thin wrapper per system call, and the logger.
        .target(name: "Posix", dependencies: ["CVirtioFS", "Options"], swiftSettings: hotPath),

        .target(name: "VhostUser", dependencies: ["CVirtioFS", "Posix"], swiftSettings: hotPath),
        .target(name: "FUSE", dependencies: ["CVirtioFS", "Posix"], swiftSettings: hotPath),
        .target(name: "XattrMap"),
        // --translate-uid/--translate-gid rules and tables; pure.
        .target(name: "IDTranslation"),
        .target(name: "Passthrough", dependencies: ["CVirtioFS", "Posix", "FUSE", "XattrMap", "Options", "IDTranslation"], swiftSettings: hotPath),
        .target(name: "Sandbox", dependencies: ["CVirtioFS", "Posix", "CSeccomp", "CCapNG", "Options"]),
        // The /dev/fuse transport: the same dispatcher, fed by a host FUSE mount.
        .target(name: "HostFUSE", dependencies: ["CVirtioFS", "Posix", "FUSE", "CFuse3"]),
        // Both command-line syntaxes into the option model, and the usage text; pure.
        .target(name: "DaemonConfig", dependencies: ["Options", "XattrMap", "IDTranslation"]),
        // A vhost-user frontend (what QEMU does) for tests and the load driver.
        .target(name: "VhostUserFrontend", dependencies: ["CVirtioFS", "Posix"]),

        .executableTarget(
            name: "virtiofsd",
            dependencies: ["CVirtioFS", "Posix", "VhostUser", "FUSE", "Passthrough",
                           "Sandbox", "HostFUSE", "DaemonConfig", "Options"],
            swiftSettings: hotPath,
            linkerSettings: [
                // Release builds link the C++ runtime statically (with --static-swift-stdlib
                // the binary then needs only libc, libseccomp, libcap-ng and libfuse3).
                // `make release` puts a libstdc++.a link in this directory; the toolchain's
                // own -lstdc++ then finds it before the shared library. Without the
                // directory the link is simply dynamic.
                .unsafeFlags(["-Xclang-linker", "-L.build/static-libstdc++",
                              "-Xclang-linker", "-static-libgcc"],
                             .when(configuration: .release)),
            ]),
        .executableTarget(
            name: "virtiofsd-bench",
            dependencies: ["CVirtioFS", "Posix", "VhostUserFrontend"],
            path: "Benchmarks/LoadDriver"),
        // Test support, not shipped: enters the sandbox in a fresh single-threaded
        // process so SandboxTests can inspect it from outside.
        .executableTarget(name: "sandbox-probe", dependencies: ["Sandbox", "Posix", "Options"],
                          path: "Tests/SandboxProbe"),

        // libFuzzer harnesses (Fuzz/, `make fuzz`). Built with -sanitize=fuzzer by the
        // Makefile; in an ordinary build each is a replayer of the inputs named on its
        // command line, so seeds and crash reproducers run anywhere.
        .target(name: "FuzzSupport", dependencies: ["CVirtioFS", "Posix", "FUSE"], path: "Fuzz/Support"),
        .executableTarget(name: "fuzz-vhost-message", dependencies: ["FuzzSupport", "VhostUser", "CVirtioFS", "Posix"],
                          path: "Fuzz/VhostMessage"),
        .executableTarget(name: "fuzz-virtqueue", dependencies: ["FuzzSupport", "VhostUser", "CVirtioFS", "Posix"],
                          path: "Fuzz/Virtqueue"),
        .executableTarget(name: "fuzz-fuse-null", dependencies: ["FuzzSupport", "FUSE", "Posix"],
                          path: "Fuzz/FUSENull"),
        .executableTarget(name: "fuzz-fuse-passthrough",
                          dependencies: ["FuzzSupport", "FUSE", "Passthrough", "Options", "XattrMap", "CVirtioFS", "Posix"],
                          path: "Fuzz/FUSEPassthrough"),
        .executableTarget(name: "fuzz-xattrmap", dependencies: ["FuzzSupport", "XattrMap"], path: "Fuzz/XattrMap"),
        .executableTarget(name: "fuzz-command-line", dependencies: ["FuzzSupport", "DaemonConfig"],
                          path: "Fuzz/CommandLine"),

        .testTarget(name: "OptionsTests", dependencies: ["Options", "XattrMap"]),
        .testTarget(name: "PosixTests", dependencies: ["Posix", "Options"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "CVirtioFS", "Posix"]),
        .testTarget(name: "FUSETests", dependencies: ["FUSE", "CVirtioFS", "Posix"]),
        .testTarget(name: "HostFUSETests", dependencies: ["HostFUSE", "FUSE", "CVirtioFS", "Posix"]),
        .testTarget(name: "XattrMapTests", dependencies: ["XattrMap"]),
        .testTarget(name: "IDTranslationTests", dependencies: ["IDTranslation"]),
        .testTarget(name: "PassthroughTests", dependencies: ["Passthrough", "FUSE", "Posix", "CVirtioFS", "Options", "IDTranslation"]),
        // The passthrough backend behind the real dispatcher and a host /dev/fuse mount.
        .testTarget(name: "PassthroughKernelTests",
                    dependencies: ["Passthrough", "HostFUSE", "FUSE", "Posix", "CVirtioFS", "Options"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "Posix", "Options"]),
        .testTarget(name: "DaemonConfigTests", dependencies: ["DaemonConfig", "Options", "XattrMap", "IDTranslation"]),
        .testTarget(name: "IntegrationTests",
                    dependencies: ["VhostUserFrontend", "Posix", "CVirtioFS"]),
    ],
    swiftLanguageModes: [.v6]
)
