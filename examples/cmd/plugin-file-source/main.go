// Command plugin-file-source is disco's file source as a plugin binary: a
// host runs it with plugin.NewSource and gets the targets of the file or
// directory given as its argument.
//
//	src, err := plugin.NewSource("plugin-file-source", plugin.WithArgs("/etc/disco"))
package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core/plugin"
	"github.com/disco-lb/disco/sources/file"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: plugin-file-source <file or directory> (run by a disco host)")
		os.Exit(2)
	}
	log := plugin.Logger()
	src, err := file.New(os.Args[1], file.WithLogger(log))
	if err != nil {
		log.Fatal("plugin-file-source: cannot read the path", zap.Error(err))
	}
	plugin.ServeSource(src)
}
