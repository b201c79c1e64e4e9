"""rmmscan: find binaries signed by remote-management vendors, as DeviceFileCertificateInfo rows."""

__version__ = "0.1.0"
