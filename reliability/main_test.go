package reliability

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/goleak"
)

// envChild makes the test binary run as a helper process of the suite
// instead of running tests (see crash_test.go).
const envChild = "MQ_RELIABILITY_CHILD"

func TestMain(m *testing.M) {
	if err := clog.Init(context.Background(), &clog.Config{Level: "warn", Format: "console", Output: "stderr"}); err != nil {
		panic(err)
	}
	if mode := os.Getenv(envChild); mode != "" {
		switch mode {
		case "crash-consumer":
			os.Exit(runCrashConsumer())
		default:
			fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, mode)
			os.Exit(2)
		}
	}
	goleak.VerifyTestMain(m)
}
