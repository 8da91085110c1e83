#!/usr/bin/python3
"""Builds the sandbox ("pause") image of conformance/tests/containerd.rs: nothing can be
pulled here, so it is made from Debian's busybox-static.

    pause_image.py OUT.tar NAME

OUT.tar is an OCI image layout archive (oci-layout, index.json, blobs/sha256/...) with one
uncompressed layer holding /bin/busybox; the image runs `busybox sleep` forever (the
sandbox only holds the namespaces). index.json names it NAME
(io.containerd.image.name), which `ctr images import` takes as the image's name.
"""
import hashlib
import io
import json
import sys
import tarfile

BUSYBOX = "/bin/busybox"


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, name = sys.argv[1], sys.argv[2]

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        layer.addfile(d)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
    layer_data = layer_buf.getvalue()
    layer_digest, layer_size = blob(layer_data)

    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    config_digest, config_size = blob(config)

    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest, manifest_size = blob(manifest)

    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}],
    }).encode()

    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add(tar, "index.json", index)
        for digest, data in ((layer_digest, layer_data), (config_digest, config),
                             (manifest_digest, manifest)):
            add(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)


if __name__ == "__main__":
    main()
