// Package reliability is mq's fault and load suite: it proves, scenario by
// scenario, that nothing is lost. Each scenario counts the messages sent,
// acknowledged, processed, lost and duplicated, fails when the delivery
// promise of package mq breaks, and logs its figures as one parsable line:
//
//	RESULT scenario=crash broker=kfake runs=12 sent=20000 acked=20000 processed=20311 lost=0 dup=311 ...
//
// The suite is all tests (see RELIABILITY.md at the repository root):
//
//	go test -race -count=1 ./reliability                               # in-process kfake broker
//	MQ_TEST_BROKERS=127.0.0.1:9092 go test -count=1 ./reliability       # a real broker
//	MQ_TEST_CLUSTER_BROKERS=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 \
//		go test -count=1 -run BrokerFailure ./reliability                # broker failure, real cluster
//	MQ_SOAK=1 go test -count=1 -timeout 2h ./reliability               # longer soak
//	go test -short ./reliability                                       # smaller figures
package reliability
