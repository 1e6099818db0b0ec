package main

import (
	"os"
	"strings"
)

func commandLine() string {
	return "go run . " + strings.Join(os.Args[1:], " ")
}
