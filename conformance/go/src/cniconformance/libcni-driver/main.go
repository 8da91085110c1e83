// libcni-driver: a cnitool-equivalent runtime built on the real libcni (Debian's
// golang-github-appc-cni-dev, libcni 1.1), so conformance/tests/libcni.rs can run our
// plugins exactly as containerd 1.6, podman 4 and cnitool call them: conflist parsing,
// version negotiation, prevResult chaining, the result cache, CHECK and DEL from the
// cache.
//
//	libcni-driver ADD|CHECK|DEL CONFLIST CONTAINER_ID NETNS IFNAME
//
// Environment: CNI_PATH (plugin dirs, colon-separated), CNI_CACHE_DIR (libcni's result
// cache), CAP_ARGS (optional JSON object: the runtime's capability args, e.g.
// portMappings, bandwidth). ADD prints the result (in the conflist's version) on
// stdout; any error goes to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "libcni-driver: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 6 {
		fail("usage: %s ADD|CHECK|DEL CONFLIST CONTAINER_ID NETNS IFNAME", os.Args[0])
	}
	cmd, confPath, id, netns, ifname := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]

	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		fail("%s: %v", confPath, err)
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname}
	if caps := os.Getenv("CAP_ARGS"); caps != "" {
		if err := json.Unmarshal([]byte(caps), &rt.CapabilityArgs); err != nil {
			fail("CAP_ARGS: %v", err)
		}
	}
	cacheDir := os.Getenv("CNI_CACHE_DIR")
	if cacheDir == "" {
		fail("CNI_CACHE_DIR is not set")
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), cacheDir, nil)
	ctx := context.Background()

	switch cmd {
	case "ADD":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("ADD: %v", err)
		}
		if err := res.Print(); err != nil {
			fail("printing the result: %v", err)
		}
	case "CHECK":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CHECK: %v", err)
		}
	case "DEL":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("DEL: %v", err)
		}
	default:
		fail("unknown command %q", cmd)
	}
}
