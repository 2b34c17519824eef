// Command elector is client-go's leader election (k8s.io/client-go/tools/leaderelection with a
// LeaseLock), the same code as client-go's leader-election example, with its timings as flags so that
// benchmarks compare it with leasecron at equal LD/RD/RP. It prints one JSON line per event on stdout:
//
//	{"event":"started_leading","id":"a","at":"2026-12-06T01:02:03.456789Z"}
//	{"event":"stopped_leading",...}   {"event":"new_leader","leader":"b",...}
//
// SIGTERM or SIGINT cancels the elector; with -release-on-cancel (the default, as the example) the Lease
// is released (holderIdentity empty, leaseDurationSeconds 1) before it exits 0.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

var out sync.Mutex

func emit(fields map[string]string) {
	fields["at"] = time.Now().UTC().Format(time.RFC3339Nano)
	line, _ := json.Marshal(fields)
	out.Lock()
	defer out.Unlock()
	fmt.Println(string(line))
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig path")
	id := flag.String("id", "", "this candidate's identity")
	namespace := flag.String("namespace", "default", "the Lease's namespace")
	name := flag.String("name", "leasecron", "the Lease's name")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LD")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RD")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RP")
	release := flag.Bool("release-on-cancel", true, "release the Lease when cancelled")
	flag.Parse()
	if *id == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "elector: -id and -kubeconfig are required")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "elector: %v\n", err)
		os.Exit(1)
	}
	client := clientset.NewForConfigOrDie(config)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *id},
	}
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cancel()
	}()
	emit(map[string]string{"event": "started", "id": *id})
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: *release,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				emit(map[string]string{"event": "started_leading", "id": *id})
			},
			OnStoppedLeading: func() {
				emit(map[string]string{"event": "stopped_leading", "id": *id})
			},
			OnNewLeader: func(identity string) {
				emit(map[string]string{"event": "new_leader", "id": *id, "leader": identity})
			},
		},
	})
	emit(map[string]string{"event": "exited", "id": *id})
}
